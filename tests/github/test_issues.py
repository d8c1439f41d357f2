"""GET /projects/{id}/issues: the spec's fields, state and label filters, pagination, tasks_count."""
from __future__ import annotations

import uuid

from mcc.extensions import db
from mcc.github import records
from mcc.models.task import Task
from tests.factories import assert_error, make_project

ISSUE_FIELDS = {"id", "number", "title", "body", "state", "labels", "author", "assignees", "html_url", "comments",
                "created_at", "updated_at", "tasks_count"}


def github_issue(number: int, state: str = "open", labels=(), updated: str = "2026-03-01T10:00:00Z") -> dict:
    return {"id": 1000 + number, "number": number, "title": f"Issue {number}", "body": "Body", "state": state,
            "labels": [{"name": name} for name in labels], "user": {"login": "octocat"},
            "assignees": [{"login": "hubot"}], "comments": 2, "html_url": f"https://github.com/o/r/issues/{number}",
            "created_at": "2026-03-01T09:00:00Z", "updated_at": updated, "closed_at": None}


def test_issues_list_filters_paginates_and_counts_tasks(client, db_session, viewer):
    project = make_project()
    records.upsert_issues(project.id, [github_issue(1, labels=["bug", "Help Wanted"]), github_issue(2, "closed"),
                                       github_issue(3, labels=["bugfix"]), github_issue(4, labels=['50%_"odd"'])])
    issue_one = records.upsert_issue(project.id, github_issue(1, labels=["bug", "Help Wanted"]))[0]
    db.session.add_all([Task(project_id=project.id, title=f"t{n}", issue_id=issue_one.id) for n in range(2)])
    db.session.commit()
    api = f"/api/v1/projects/{project.id}/issues"

    page = client.get(api, headers=viewer).get_json()
    assert [i["number"] for i in page["items"]] == [4, 3, 1] and page["total"] == 3
    first = page["items"][-1]
    assert set(first) == ISSUE_FIELDS
    assert first == {**first, "title": "Issue 1", "state": "open", "labels": ["bug", "Help Wanted"],
                     "author": "octocat", "assignees": ["hubot"], "comments": 2, "tasks_count": 2,
                     "created_at": "2026-03-01T09:00:00Z", "updated_at": "2026-03-01T10:00:00Z"}

    def numbers(**params):
        response = client.get(api, query_string=params, headers=viewer)
        assert response.status_code == 200, response.get_json()
        return [i["number"] for i in response.get_json()["items"]]

    assert numbers(state="closed") == [2]
    assert numbers(state="all") == [4, 3, 2, 1]
    assert numbers(label="bug") == [1]  # a whole label, not a prefix of "bugfix"
    assert numbers(label="help wanted") == [1]
    assert numbers(label='50%_"odd"') == [4] and numbers(label="50%") == []
    assert numbers(state="all", limit=3, page=2) == [1]
    assert_error(client.get(api, query_string={"state": "merged"}, headers=viewer), 422, "VALIDATION_ERROR")
    assert_error(client.get(f"/api/v1/projects/{uuid.uuid4()}/issues", headers=viewer), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.get(api), 401, "UNAUTHORIZED")
