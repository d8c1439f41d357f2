"""Copies of one console tab (a duplicated tab) share one session: a rotation made by one copy is
found by the others (a sealed note in localStorage, refreshes taking turns), so none later
presents a rotated token and ends them all."""
from __future__ import annotations

import pytest

from tests.browser.conftest import _stack, expect


@pytest.fixture
def strict_web(stack_env, committed_db, app, tmp_path, browser):
    """No refresh reuse grace: any rotated token presented again ends its session at once. Access
    tokens live 6 s, so a tab refreshes by itself every 3 s."""
    yield from _stack(app, {**stack_env, "MCC_REFRESH_REUSE_GRACE_SECONDS": "0", "MCC_ACCESS_TOKEN_SECONDS": "6"},
                      tmp_path, browser, workers=0)


def _copy_of(page):
    """A second tab in the same browser that starts with the first one's sessionStorage, as a
    duplicated tab does."""
    stored = page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    copy = page.context.new_page()
    copy.errors = []
    copy.on("pageerror", lambda error: copy.errors.append(str(error)))
    copy.add_init_script(f"if (!sessionStorage.length) for (const [k, v] of {stored}) sessionStorage.setItem(k, v);")
    return copy


def test_a_duplicated_tab_and_its_original_keep_one_session(strict_web):
    original = strict_web.logged_in("operator", "/budget")
    expect(original.get_by_test_id("budget-today")).to_be_visible()
    before = original.evaluate("sessionStorage.getItem('mcc.refresh')")
    copy = _copy_of(original)
    copy.goto("/budget")  # resumes the session: rotates the refresh token both tabs held
    expect(copy.get_by_test_id("budget-today")).to_be_visible()
    expect(copy.get_by_test_id("live-status")).to_have_text("connected")
    rotated = copy.evaluate("sessionStorage.getItem('mcc.refresh')")
    assert rotated != before
    # The original still holds the token the copy rotated; reloaded, it follows the copy's sealed
    # note to the newest token instead of presenting the revoked one.
    original.reload()
    expect(original.get_by_test_id("budget-today")).to_be_visible()
    expect(original).to_have_url(f"{strict_web.base}/budget")
    expect(original.get_by_test_id("live-status")).to_have_text("connected")
    assert original.evaluate("sessionStorage.getItem('mcc.refresh')") not in (before, rotated)
    stored = original.evaluate("JSON.stringify(localStorage)")  # the notes: sealed, no token in clear
    assert "mcc.rotation." in stored and before not in stored and rotated not in stored
    copy.reload()  # ...and the copy, in turn, follows the original's note
    expect(copy.get_by_test_id("budget-today")).to_be_visible()
    expect(copy).to_have_url(f"{strict_web.base}/budget")
    assert original.errors == [] and copy.errors == []


def test_copies_refreshing_on_their_own_timers_take_turns_and_stay_logged_in(strict_web):
    """Both tabs refresh on their own timers, every 3 s, often together: the refreshes take turns,
    and each tab follows the other's notes instead of presenting a token already rotated (a reuse,
    with no grace here)."""
    original = strict_web.logged_in("operator", "/budget")
    copy = _copy_of(original)
    copy.goto("/budget")
    expect(copy.get_by_test_id("live-status")).to_have_text("connected")
    seen = set()
    for _ in range(5):  # about 12 s: four rounds of each timer
        original.wait_for_timeout(2500)
        for page in (original, copy):
            seen.add(page.evaluate("sessionStorage.getItem('mcc.refresh')"))
            expect(page).to_have_url(f"{strict_web.base}/budget")
    assert len(seen) >= 4  # the token did rotate, round after round
    for page in (original, copy):
        page.reload()  # each still holds the family's live token
        expect(page.get_by_test_id("budget-today")).to_be_visible()
        expect(page).to_have_url(f"{strict_web.base}/budget")
    assert original.errors == [] and copy.errors == []
