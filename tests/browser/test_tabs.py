"""Copies of one console tab (duplicated, or opened from it) share one session: a rotation made by
one copy reaches the others, so none later presents a rotated token and ends them all."""
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
    # The original heard of the rotation and holds the new token, not the one the server revoked.
    original.wait_for_function("token => sessionStorage.getItem('mcc.refresh') === token", arg=rotated)
    original.reload()  # refreshes with what it holds: a revoked token would end both tabs' session
    expect(original.get_by_test_id("budget-today")).to_be_visible()
    expect(original).to_have_url(f"{strict_web.base}/budget")
    expect(original.get_by_test_id("live-status")).to_have_text("connected")
    copy.reload()  # ...and the copy, in turn, heard of the original's rotation
    expect(copy.get_by_test_id("budget-today")).to_be_visible()
    expect(copy).to_have_url(f"{strict_web.base}/budget")
    assert original.errors == [] and copy.errors == []


def test_copies_refreshing_on_their_own_timers_take_turns_and_stay_logged_in(strict_web):
    """After the copy's rotation reaches the original, both tabs' timers are set at the same moment
    and fire together: the refreshes take turns, and the second tab uses the pair the first one
    got instead of presenting the same token again (a reuse, with no grace here)."""
    original = strict_web.logged_in("operator", "/budget")
    copy = _copy_of(original)
    copy.goto("/budget")
    expect(copy.get_by_test_id("live-status")).to_have_text("connected")
    seen = set()
    for _ in range(5):  # about 12 s: four rounds of both timers
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
