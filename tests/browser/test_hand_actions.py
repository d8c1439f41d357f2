"""Console actions a new user does by hand (issue 12), driven through the real UI in Chromium and
checked through the REST API: an admin creates, edits and deletes a budget limit on /budget."""
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
