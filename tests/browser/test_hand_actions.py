"""Console actions a new user does by hand (issue 12), driven through the real UI in Chromium and
checked through the REST API or the database: budget limits CRUD on /budget (admin); an agent
created, its model_config edited and its memory reset, and a conversation paused and resumed
(operator); a GitHub issue started, which opens the architect's issue conversation."""
from __future__ import annotations

from tests.browser.conftest import expect


def _limits(stack) -> list:
    response = stack.api("GET", "/budget/limits?limit=100", token=stack.login("admin"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_admin_creates_edits_and_deletes_a_budget_limit_by_hand(web):
    page = web.logged_in("admin", "/budget")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    assert _limits(web) == []

    page.get_by_test_id("limit-new").click()
    page.get_by_test_id("limit-name").fill("by hand")
    page.get_by_test_id("limit-amount_usd").fill("12.5")
    page.get_by_test_id("limit-period").select_option("weekly")
    page.get_by_test_id("limit-action_on_exceed").select_option("pause")
    page.get_by_test_id("confirm-ok").click()
    limit = web.wait_for(lambda: _limits(web))[0]
    assert (limit["name"], float(limit["amount_usd"]), limit["period"], limit["action_on_exceed"],
            limit["scope_type"]) == ("by hand", 12.5, "weekly", "pause", "global")
    row = page.get_by_test_id(f"limit-{limit['id']}")
    expect(row).to_contain_text("by hand")
    expect(row).to_contain_text("weekly")

    page.get_by_test_id(f"limit-edit-{limit['id']}").click()
    page.get_by_test_id("limit-amount_usd").fill("40")
    page.get_by_test_id("limit-period").select_option("monthly")
    page.get_by_test_id("confirm-ok").click()
    expect(row).to_contain_text("monthly")
    edited = _limits(web)
    assert [(l["id"], float(l["amount_usd"]), l["period"]) for l in edited] == [(limit["id"], 40.0, "monthly")]

    page.get_by_test_id(f"limit-delete-{limit['id']}").click()
    expect(row).to_have_count(0)
    assert dialogs == ["Delete the limit 'by hand'?"]
    assert _limits(web) == []
    assert page.errors == []


def _agents(stack, project: str) -> dict:
    response = stack.api("GET", f"/projects/{project}/agents?limit=100", token=stack.login("operator"))
    assert response.status_code == 200, response.text
    return {a["name"]: a for a in response.json()["items"]}


def test_operator_creates_edits_and_resets_an_agent_then_pauses_and_resumes_a_conversation(web, app):
    from mcc.extensions import db
    from mcc.models.agent import Agent
    from tests.workers.conftest import make_team

    team = make_team(app, ("Ada", "architect", "anthropic/claude-3.5-sonnet"))
    project = team["project"]
    page = web.logged_in("operator", f"/projects/{project}")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))

    page.get_by_test_id("agent-new").click()
    page.get_by_test_id("agent-name").fill("Hand")
    page.get_by_test_id("agent-type").select_option("tester")
    page.get_by_test_id("agent-model").fill("openai/gpt-4o")
    page.get_by_test_id("confirm-ok").click()
    hand = web.wait_for(lambda: _agents(web, project).get("Hand"))
    assert hand["type"] == "tester" and hand["model_config"]["model"] == "openai/gpt-4o"
    expect(page.get_by_test_id(f"agent-{hand['id']}")).to_contain_text("Hand")

    page.get_by_test_id(f"agent-edit-{hand['id']}").click()
    page.get_by_test_id("agent-temperature").fill("0.7")
    page.get_by_test_id("agent-max-tokens").fill("2048")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id(f"agent-edit-{hand['id']}").locator("xpath=../..")).to_contain_text("t=0.7 · 2048 tok")
    config = _agents(web, project)["Hand"]["model_config"]
    assert (config["model"], config["temperature"], config["max_tokens"]) == ("openai/gpt-4o", 0.7, 2048)

    with app.app_context():
        assert db.session.get(Agent, hand["id"]).memory_reset_at is None
    page.get_by_test_id(f"agent-reset-{hand['id']}").click()
    with app.app_context():
        assert web.wait_for(lambda: (db.session.expire_all(), db.session.get(Agent, hand["id"]).memory_reset_at)[1])
    assert dialogs == ["Reset Hand's memory?"]

    page.goto(f"/projects/{project}/conversations/{team['conversation']}")
    conversation = f"/projects/{project}/conversations/{team['conversation']}"
    status = lambda: web.api("GET", conversation, token=web.login("operator")).json()["status"]  # noqa: E731
    expect(page.get_by_test_id("conversation-status")).to_have_text("active")
    page.get_by_test_id("conversation-pause").click()
    expect(page.get_by_test_id("conversation-status")).to_have_text("paused")
    assert status() == "paused"
    page.get_by_test_id("conversation-resume").click()
    expect(page.get_by_test_id("conversation-status")).to_have_text("active")
    assert status() == "active"
    assert page.errors == []


def test_operator_starts_a_github_issue_and_the_architect_gets_it(web, app):
    from sqlalchemy import select

    from mcc.extensions import db
    from mcc.models.conversation import Conversation
    from mcc.models.project import Project
    from tests.factories import make_issue
    from tests.workers.conftest import make_team

    team = make_team(app, ("Ada", "architect", "anthropic/claude-3.5-sonnet"))
    project = team["project"]
    with app.app_context():
        issue = str(make_issue(db.session.get(Project, project), number=7, title="Add a dark mode").id)
    page = web.logged_in("operator", f"/projects/{project}")
    expect(page.get_by_test_id(f"issue-{issue}")).to_contain_text("#7 Add a dark mode")
    page.get_by_test_id(f"issue-start-{issue}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("#7 Add a dark mode")
    with app.app_context():
        started = db.session.scalars(select(Conversation).where(Conversation.issue_id == issue)).all()
        assert [(c.type, [a.name for a in c.agents]) for c in started] == [("issue", ["Ada"])]
        conversation = str(started[0].id)
    assert page.url.endswith(f"/projects/{project}/conversations/{conversation}")
    again = web.api("POST", f"/projects/{project}/issues/{issue}/start", token=web.login("operator"))
    assert again.status_code == 409 and again.json()["error"]["details"]["conversation_id"] == conversation, again.text
    assert page.errors == []
