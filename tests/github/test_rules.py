"""An agent's rules file is read from the repository's default branch, cached, and forgotten on push."""
from __future__ import annotations

from mcc.github.contents import forget_rules
from mcc.runtime.tools import rules_text
from tests.factories import make_agent, make_project
from tests.github.conftest import deliver, load_payload, process_all


def test_rules_text_reads_the_file_through_github_and_caches_it(client, app, db_session, github_config,
                                                                fake_github):
    repo = fake_github.add_repo("octo-org/rules-repo")
    repo.files["docs/AGENT_RULES.md"] = "# Rules\nAlways write tests.\n"
    project = make_project(github_repo="octo-org/rules-repo")
    agent = make_agent(project, rules_file_path="docs/AGENT_RULES.md")
    assert rules_text(agent, project) == "# Rules\nAlways write tests.\n"
    repo.files["docs/AGENT_RULES.md"] = "changed"
    assert rules_text(agent, project) == "# Rules\nAlways write tests.\n"  # cached
    assert len(fake_github.calls("GET", r"/contents/")) == 1
    forget_rules(project.id)
    assert rules_text(agent, project) == "changed"


def test_rules_text_is_none_without_a_file_access_or_on_failure(client, app, db_session, github_config,
                                                               fake_github):
    fake_github.add_repo("octo-org/rules-repo")
    project = make_project(github_repo="octo-org/rules-repo")
    assert rules_text(make_agent(project), project) is None  # no rules_file_path
    missing = make_agent(project, rules_file_path="docs/NOPE.md")
    assert rules_text(missing, project) is None
    fake_github.fail("GET", r"/contents/", 500, times=10)
    other = make_agent(project, rules_file_path="docs/OTHER.md")
    assert rules_text(other, project) is None
    github_config["MCC_GITHUB_TOKEN"] = None
    assert rules_text(make_agent(project, rules_file_path="x.md"), project) is None


def test_a_push_to_the_default_branch_forgets_cached_rules(client, app, hello, fake_github):
    repo = fake_github.repos["codertocat/hello-world"]
    repo.files["RULES.md"] = "old rules"
    agent = make_agent(hello, rules_file_path="RULES.md")
    assert rules_text(agent, hello) == "old rules"
    repo.files["RULES.md"] = "new rules"
    push = load_payload("push/payload.json")
    push["ref"] = f"refs/heads/{push['repository']['default_branch']}"
    deliver(client, "push", push)
    assert process_all(app) == ["processed"]
    assert rules_text(agent, hello) == "new rules"
