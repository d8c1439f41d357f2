"""Pull request approvals (with their merge), rejections and webhook secret changes are on the audit trail."""
from __future__ import annotations

from sqlalchemy import select

from mcc.extensions import db
from mcc.models.audit import AuditEvent
from tests.github.test_pull_requests import green, mirrored, project, shop, url  # noqa: F401


def _trail(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_approve_merge_and_reject_are_on_the_trail(client, project, shop, operator):  # noqa: F811
    pull = shop.add_pull()
    green(shop, pull)
    pr = mirrored(project, pull)
    assert client.post(url(project, pr, "approve"), headers=operator).status_code == 200
    [approved], [merged] = _trail("pull_request.approved"), _trail("pull_request.merged")
    assert approved.actor.startswith("gh-operator-") and approved.target_id == str(pr.id)
    assert merged.details["number"] == pull["number"] and merged.details["merge_method"] == "squash"
    assert merged.request_id == approved.request_id

    other = mirrored(project, shop.add_pull())
    assert client.post(url(project, other, "reject"), json={"feedback": "Add tests."},
                       headers=operator).status_code == 200
    [rejected] = _trail("pull_request.rejected")
    assert (rejected.target_id, rejected.details["feedback"]) == (str(other.id), "Add tests.")


def test_a_failed_merge_leaves_no_trail(client, project, shop, fake_github, operator):  # noqa: F811
    pull = shop.add_pull()
    green(shop, pull)
    pr = mirrored(project, pull)
    fake_github.fail("PUT", r"/merge$", 500, {"message": "boom"}, times=10)
    assert client.post(url(project, pr, "approve"), headers=operator).status_code == 502
    assert _trail("pull_request.merged") == [] and _trail("pull_request.approved") == []


def test_webhook_secret_changes_are_on_the_trail_without_the_secret(client, project, operator):  # noqa: F811
    secret = "s3cret-value-0123456789"
    response = client.patch(f"/api/v1/projects/{project.id}/github", json={"webhook_secret": secret},
                            headers=operator)
    assert response.status_code == 200, response.get_json()
    [changed] = _trail("project.webhook_secret_changed")
    assert changed.details == {"set": True} and changed.target_id == str(project.id)
    [updated] = _trail("project.updated")
    assert secret not in str(updated.details) and updated.details["changes"]["github_webhook_secret"] == "[redacted]"
    client.patch(f"/api/v1/projects/{project.id}/github", json={"webhook_secret": None}, headers=operator)
    assert [e.details for e in _trail("project.webhook_secret_changed")] in ([{"set": True}, {"set": False}],
                                                                          [{"set": False}, {"set": True}])
