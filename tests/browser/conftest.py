"""The console in a real headless Chromium (Debian's, driven by Playwright) against a real stack:
the Procfile's web process and an RQ worker on the test database and Redis, the LLM stub and the
fake GitHub on loopback. One browser for the whole run; a fresh browser context per page."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pyotp
import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

# Playwright's 5 s default for expect() is tight for a login plus a socket connect on 2 shared
# cores under a full test run (a 2FA login test failed once that way). Checks that measure
# latency (pause seen within 1 s) pass their own timeout.
expect.set_options(timeout=15_000)

from tests.factories import PASSWORD, make_user
from tests.github.conftest import fake_github, rsa_keys  # noqa: F401  (fixtures)
from tests.live import ROOT
from tests.pipeline.conftest import fake_git, pipeline_env, repo  # noqa: F401  (fixtures)
from tests.workers.conftest import Runtime, llm, runtime_env  # noqa: F401  (fixtures)

CHROMIUM = os.environ.get("MCC_CHROMIUM", "/usr/bin/chromium")
DIST = ROOT / "dashboard" / "dist" / "index.html"
SCREENSHOTS = ROOT / "docs" / "screenshots"
pytestmark = pytest.mark.live


@pytest.fixture(scope="session")
def browser():
    if not DIST.is_file():
        pytest.fail("the console is not built: run scripts/console (scripts/test does)")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/browser (scripts/test does) or set MCC_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


class Stack(Runtime):
    """Runtime plus the users the tests log in as, and pages opened in the shared browser."""

    def __init__(self, env, tmp_path, browser, workers: int):
        super().__init__(env, tmp_path, workers=workers)
        self.browser = browser
        self.contexts = []

    def page(self, width: int = 1280, height: int = 800) -> Page:
        context = self.browser.new_context(viewport={"width": width, "height": height}, base_url=self.base)
        self.contexts.append(context)
        page = context.new_page()
        page.errors = []  # uncaught errors and CSP violations seen by the page
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        # Refusals the API answers (a wrong code: 401) are logged by Chromium as failed loads; the
        # rest (uncaught errors, CSP violations) are the page's own.
        page.on("console", lambda msg: page.errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
        return page

    def logged_in(self, username: str, path: str = "/") -> Page:
        page = self.page()
        page.goto(path)
        login(page, username)
        return page

    def stop(self):
        for context in self.contexts:
            context.close()
        super().stop()


def login(page: Page, username: str, password: str = PASSWORD) -> None:
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("system-state")).to_have_text("running")
    expect(page.get_by_test_id("live-status")).to_have_text("connected")


@pytest.fixture
def stack_env(test_env, llm, fake_github):
    return {**test_env, "MCC_LLM_BASE_URL": llm.base_url, "MCC_LLM_API_KEY": "test-key",
            "MCC_LLM_BACKOFF_BASE": "0.01", "MCC_LLM_BACKOFF_MAX": "0.05", "MCC_TURN_HEARTBEAT_SECONDS": "1",
            "MCC_REAPER_SECONDS": "1", "MCC_AGENT_BUSY_RETRY_SECONDS": "0.5",
            "MCC_GITHUB_API_URL": fake_github.base_url, "MCC_GITHUB_TOKEN": fake_github.token,
            "MCC_GITHUB_BACKOFF_BASE": "0.01", "MCC_GITHUB_MAX_RETRIES": "1", "MCC_GITHUB_TIMEOUT": "5",
            "MCC_GITHUB_SYNC_INTERVAL": "0", "MCC_RATE_LIMIT": "100000 per minute",
            "MCC_LOGIN_RATE_LIMIT": "10000 per minute"}


def _stack(app, env, tmp_path, browser, workers: int):
    with app.app_context():
        for role in ("admin", "operator", "viewer"):
            make_user(role, username=role)
    stack = Stack(env, tmp_path, browser, workers=workers)
    yield stack
    stack.stop()


@pytest.fixture
def web(stack_env, committed_db, app, tmp_path, browser):
    """The web process only (no worker): for what needs no agent turn."""
    yield from _stack(app, stack_env, tmp_path, browser, workers=0)


@pytest.fixture
def stack(stack_env, committed_db, app, tmp_path, browser):
    """Web and one worker."""
    yield from _stack(app, stack_env, tmp_path, browser, workers=1)


@pytest.fixture
def pipeline_stack(pipeline_env, committed_db, app, tmp_path, browser, repo):  # noqa: F811
    """Web and one worker on the fake GitHub that holds real branches and commits (tests/pipeline)."""
    yield from _stack(app, {**pipeline_env, "MCC_LOGIN_RATE_LIMIT": "10000 per minute"}, tmp_path, browser,
                      workers=1)


def enable_2fa(stack: Stack, username: str) -> pyotp.TOTP:
    token = stack.login(username)
    setup = stack.api("POST", "/auth/2fa/setup", token=token, json={"password": PASSWORD}).json()
    totp = pyotp.TOTP(setup["secret"])
    enabled = stack.api("POST", "/auth/2fa/enable", token=token,
                        json={"code": totp.at(time.time() - 30), "password": PASSWORD})
    assert enabled.status_code == 200, enabled.text
    return totp


def screenshot(page: Page, name: str) -> None:
    """docs/screenshots/<name>.png at the page's 1280x800, when MCC_SCREENSHOTS=1 (kept out of normal runs)."""
    if os.environ.get("MCC_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


__all__ = ["expect", "login", "enable_2fa", "screenshot", "requests"]
