"""The console's pages in a real Chromium: a live agent reply, stored strings rendered inert, pull
request controls and refusals, role-aware controls, the budget and notifications pages, a long
conversation paged on scroll, and the API docs with the outside network blocked."""
from __future__ import annotations

from urllib.parse import urlparse

from tests.browser.conftest import expect, screenshot
from tests.workers.conftest import make_team

XSS = "<img src=x onerror=alert(1)>"


def _watch_dialogs(page) -> list:
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return dialogs


def _conversation(stack, team, username: str = "operator"):
    return stack.logged_in(username, f"/projects/{team['project']}/conversations/{team['conversation']}")


def test_agent_reply_appears_live_and_hostile_strings_render_as_text(stack, app, llm):
    team = make_team(app, (XSS, "architect", "anthropic/claude-3.5-sonnet"), title=XSS)
    page = _conversation(stack, team)
    dialogs = _watch_dialogs(page)
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS)
    page.get_by_test_id("message-input").fill(XSS)
    page.get_by_test_id("message-send").click()
    mine = stack.wait_for(lambda: [m for m in stack.messages(team["project"], team["conversation"])
                                   if m["author_type"] == "user"])
    expect(page.get_by_test_id(f"message-{mine[0]['id']}")).to_contain_text(XSS)
    reply = stack.wait_for(lambda: [m for m in stack.messages(team["project"], team["conversation"])
                                    if m["author_type"] == "agent"])[0]
    # The reply arrives over the socket: no reload.
    expect(page.get_by_test_id(f"message-{reply['id']}")).to_be_visible(timeout=10000)
    expect(page.get_by_test_id(f"message-{reply['id']}")).to_contain_text(XSS)  # the agent's name
    page.goto(f"/projects/{team['project']}")
    expect(page.get_by_test_id(f"agent-{team['agents'][XSS]}")).to_contain_text(XSS)
    expect(page.locator("img[src=x]")).to_have_count(0)
    assert dialogs == [] and page.errors == []


def test_spend_on_the_overview_and_project_pages_follows_a_finished_turn_without_reload(stack, app, llm):
    """1,000 tokens in and 500 out of claude-3.5-sonnet cost $0.0105: both pages show it once the
    agent stops working, with no reload."""
    team = make_team(app, ("Ada", "architect", "anthropic/claude-3.5-sonnet"))
    agent = team["agents"]["Ada"]
    overview = stack.logged_in("operator", "/")
    project = stack.logged_in("operator", f"/projects/{team['project']}")
    for page in (overview, project):
        expect(page.get_by_test_id(f"agent-cost-{agent}")).to_have_text("$0.00")
    expect(overview.get_by_test_id(f"project-cost-{team['project']}")).to_have_text("today $0.00")
    stack.post(team["project"], team["conversation"], "Plan the login page")
    for page in (overview, project):
        expect(page.get_by_test_id(f"agent-cost-{agent}")).to_have_text("$0.0105")
    expect(overview.get_by_test_id(f"project-cost-{team['project']}")).to_have_text("today $0.0105")
    assert overview.errors == [] and project.errors == []


def _project_with_prs(app, fake_github, title: str = XSS) -> tuple[str, dict]:
    """A project whose repository on the fake GitHub has two open pull requests: checks failing, passing."""
    from mcc.extensions import db
    from mcc.models.github import PullRequest
    from tests.factories import make_issue, make_project

    repo = fake_github.add_repo("octo-org/console")
    ids = {}
    with app.app_context():
        project = make_project(name="Console", github_repo=repo.full_name)
        make_issue(project, number=100, title=title)
        for checks in ("failure", "success"):
            pull = repo.add_pull(title=f"{title} ({checks})")
            repo.add_status(pull["head"]["sha"], "ci", checks)
            pr = PullRequest(project_id=project.id, number=pull["number"], title=pull["title"], state="open",
                             checks_state=checks, head_ref=pull["head"]["ref"], base_ref="main",
                             head_sha=pull["head"]["sha"])
            db.session.add(pr)
            db.session.commit()
            ids[checks] = str(pr.id)
        return str(project.id), ids


def test_approve_a_passing_pull_request_a_failing_one_is_refused_and_reject_needs_feedback(web, app, fake_github):
    project, prs = _project_with_prs(app, fake_github)
    page = web.logged_in("operator", f"/projects/{project}")
    dialogs = _watch_dialogs(page)
    expect(page.get_by_test_id(f"pr-{prs['failure']}")).to_contain_text(XSS)
    expect(page.locator("img[src=x]")).to_have_count(0)
    page.get_by_test_id(f"pr-approve-{prs['failure']}").click()
    expect(page.get_by_test_id(f"pr-error-{prs['failure']}")).to_contain_text("CHECKS_NOT_PASSED")
    page.get_by_test_id(f"pr-approve-{prs['success']}").click()
    expect(page.get_by_test_id(f"pr-state-{prs['success']}")).not_to_contain_text("open · none")
    expect(page.get_by_test_id(f"pr-error-{prs['success']}")).to_have_count(0)
    page.get_by_test_id(f"pr-reject-{prs['failure']}").click()
    expect(page.get_by_test_id("confirm-ok")).to_be_disabled()  # feedback is required
    page.get_by_test_id("pr-feedback").fill("Please add tests")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id(f"pr-state-{prs['failure']}")).to_contain_text("changes_requested")
    assert dialogs == [] and page.errors == []


def test_viewer_sees_no_approve_or_reject_controls(web, app, fake_github):
    project, prs = _project_with_prs(app, fake_github, title="Add login")
    page = web.logged_in("viewer", f"/projects/{project}")
    pr = prs["success"]
    expect(page.get_by_test_id(f"pr-{pr}")).to_contain_text("Add login")
    expect(page.get_by_test_id(f"pr-approve-{pr}")).to_have_count(0)
    expect(page.get_by_test_id(f"pr-reject-{pr}")).to_have_count(0)
    expect(page.get_by_test_id("pause-all")).to_have_count(0)


def test_budget_page_shows_gauges_and_the_timeline(web, app):
    from tests.factories import make_agent, make_project, make_spend

    with app.app_context():
        project = make_project(name="Spend")
        project_id = str(project.id)
        make_spend(project, make_agent(project, name="Cody"), cost_usd="3.25")
        from mcc.services.rollup import reconcile

        reconcile()  # the rollup the budget figures read, as the periodic job keeps it
    page = web.logged_in("admin", "/budget")
    for testid in ("budget-today", "budget-week", "budget-month", "budget-timeline"):
        expect(page.get_by_test_id(testid)).to_be_visible()
    expect(page.get_by_test_id("budget-today")).to_contain_text("3.25")
    page.goto("/")
    expect(page.get_by_test_id(f"project-{project_id}")).to_contain_text("Spend")


def test_notifications_read_one_then_all(web):
    admin = web.login("admin")
    for reason in ("first", "second"):
        web.api("POST", "/emergency/pause-all", token=admin, json={"reason": reason})
        web.api("POST", "/emergency/resume-all", token=admin)
    viewer = web.login("viewer")
    items = web.api("GET", "/notifications", token=viewer).json()["items"]
    assert len(items) >= 2
    page = web.logged_in("viewer", "/notifications")
    expect(page.get_by_test_id("notifications-count")).to_have_text(str(len(items)))
    page.get_by_test_id(f"notification-read-{items[0]['id']}").click()
    expect(page.get_by_test_id("notifications-count")).to_have_text(str(len(items) - 1))
    screenshot(page, "notifications")
    page.get_by_test_id("notifications-read-all").click()
    expect(page.get_by_test_id("notifications-count")).to_have_text("0")
    assert web.api("GET", "/notifications?is_read=false", token=viewer).json()["unread"] == 0


def test_ten_thousand_messages_open_without_loading_them_all(web, app):
    from mcc.extensions import db
    from mcc.models.conversation import Message

    team = make_team(app, ("Cody", "coder", "anthropic/claude-3.5-sonnet"), title="Long")
    with app.app_context():
        db.session.execute(Message.__table__.insert(), [
            {"conversation_id": team["conversation"], "author_type": "system", "content": f"line {n}"}
            for n in range(10_000)])
        db.session.commit()
    page = _conversation(web, team, "viewer")
    messages = page.locator("[data-testid^='message-']:not([data-testid^='message-tools-'])"
                            ":not([data-testid='message-list'])")
    expect(page.get_by_text("line 9999", exact=True)).to_be_visible()
    first = messages.count()
    assert 0 < first < 500
    page.get_by_test_id("message-list").evaluate("el => { el.scrollTop = 0; }")
    expect(messages).not_to_have_count(first)
    assert first < messages.count() < 1000


def test_api_docs_render_with_the_outside_network_blocked(web):
    page = web.page()
    outside = []

    def only_loopback(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", only_loopback)
    page.goto("/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_be_visible(timeout=15000)
    assert outside == []


def test_a_dropped_socket_reconnects_and_catches_up(web, app):
    team = make_team(app, ("Cody", "coder", "anthropic/claude-3.5-sonnet"), title="Outage")
    page = _conversation(web, team, "viewer")
    page.context.set_offline(True)
    expect(page.get_by_test_id("live-status")).not_to_have_text("connected", timeout=15000)
    missed = web.api("POST", f"/projects/{team['project']}/conversations/{team['conversation']}/messages",
                     json={"content": "sent while the page was offline"})
    assert missed.status_code == 201, missed.text
    page.context.set_offline(False)
    expect(page.get_by_test_id("live-status")).to_have_text("connected", timeout=15000)
    expect(page.get_by_test_id(f"message-{missed.json()['id']}")).to_contain_text(
        "sent while the page was offline", timeout=10000)


def test_a_task_card_moves_across_columns_live(web, app):
    team = make_team(app, ("Cody", "coder", "anthropic/claude-3.5-sonnet"))
    base = f"/projects/{team['project']}/tasks"
    task = web.api("POST", base, json={"title": "Build the login page"}).json()
    page = web.logged_in("viewer", f"/projects/{team['project']}")
    card = page.get_by_test_id(f"task-{task['id']}")
    expect(page.get_by_test_id("column-pending").get_by_test_id(f"task-{task['id']}")).to_be_visible()
    assert web.api("POST", f"{base}/{task['id']}/complete", json={"reason": "done by hand"}).status_code == 200
    expect(page.get_by_test_id("column-completed").get_by_test_id(f"task-{task['id']}")).to_be_visible()
    expect(page.get_by_test_id("column-pending").get_by_test_id(f"task-{task['id']}")).to_have_count(0)
    expect(card.get_by_test_id(f"task-progress-{task['id']}")).to_have_attribute("value", "100")
