"""The console in real Chromium: time to first render of `/` with data, and a 10,000-message
conversation opened and scrolled, against the Procfile web process on a throwaway database.

Usage (from the repository root, after scripts/console has built dashboard/dist):
    .venv/bin/python bench/console.py [--runs 30] [--messages 10000]

Each run reloads the page in a logged-in tab (the session survives a reload) and times, interleaved:
    floor       GET /healthz in the same tab (same server, HTTP path and browser; no app)
    overview    reload of `/` until every project card is drawn (projects, agents, today's cost)
    open        reload of the 10,000-message conversation until its newest message is drawn
    older       scroll to the top until the next older page is drawn
Then counts the messages in the DOM to show the conversation was not loaded whole.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (ADMIN_PASSWORD, ADMIN_USER, WebProcess, bench_env, log, machine,  # noqa: E402
                           make_app, migrate, private_redis, procfile_web, redis_server, summary_ms,
                           throwaway_database, workdir)

MESSAGES = "[data-testid^='message-']:not([data-testid^='message-tools-']):not([data-testid='message-list'])"


# In-app navigation, as a click on a console link does (the access token lives in the tab's memory).
NAVIGATE = "url => { history.pushState({}, '', url); dispatchEvent(new PopStateEvent('popstate')); }"


def seed(env: dict, projects: int, messages: int) -> dict:
    from mcc.extensions import db
    from mcc.models.conversation import Message
    from mcc.services.agents import create_agent
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project
    from mcc.services.users import create_user

    app = make_app(env)
    with app.app_context():
        create_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
        made = []
        for n in range(projects):
            project = create_project({"name": f"Project {n}", "github_repo": f"bench-org/console-{n}"})
            for kind in ("architect", "coder", "tester"):
                create_agent(project.id, {"name": f"{kind} {n}", "type": kind, "model_config": {
                    "model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}})
            made.append(project)
        conversation = create_conversation(made[0].id, None, {"title": "Long"})
        db.session.commit()
        db.session.execute(Message.__table__.insert(), [
            {"conversation_id": conversation.id, "author_type": "system", "content": f"line {n}"}
            for n in range(messages)])
        db.session.commit()
        return {"projects": [str(p.id) for p in made], "project": str(made[0].id),
                "conversation": str(conversation.id)}


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=10)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with workdir() as tmp, throwaway_database() as database_url, redis_server("private") as redis_base, \
            private_redis(base_url=redis_base) as redis_url, sync_playwright() as playwright:
        env = bench_env(database_url, redis_url, tmp / "instance")
        migrate(env)
        data = seed(env, args.projects, args.messages)
        web = WebProcess(procfile_web(), env, tmp / "web.log", "web (Procfile)")
        browser = playwright.chromium.launch(executable_path=os.environ.get("MCC_CHROMIUM", "/usr/bin/chromium"),
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            last = f"project-{data['projects'][-1]}"
            conversation = f"/projects/{data['project']}/conversations/{data['conversation']}"
            newest = f"line {args.messages - 1}"
            times = {"floor": [], "first_render": [], "overview": [], "open": [], "older": []}
            counts = []
            for _ in range(args.runs):
                context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=web.base)
                page = context.new_page()
                times["floor"].append(timed(lambda: page.goto("/healthz")))
                times["first_render"].append(timed(lambda: (page.goto("/"), expect(
                    page.get_by_test_id("login-username")).to_be_visible())))
                page.get_by_test_id("login-username").fill(ADMIN_USER)
                page.get_by_test_id("login-password").fill(ADMIN_PASSWORD)
                times["overview"].append(timed(lambda: (page.get_by_test_id("login-submit").click(), expect(
                    page.get_by_test_id(last)).to_be_visible())))
                times["open"].append(timed(lambda: (page.evaluate(NAVIGATE, conversation), expect(
                    page.get_by_text(newest, exact=True)).to_be_visible())))
                messages = page.locator(MESSAGES)
                opened = messages.count()
                times["older"].append(timed(lambda: (page.get_by_test_id("message-list").evaluate(
                    "el => { el.scrollTop = 0; }"), expect(messages).not_to_have_count(opened))))
                counts.append((opened, messages.count()))
                context.close()
        finally:
            browser.close()
            web.stop()
    summary = {"machine": machine(), "runs": args.runs, "messages": args.messages, "projects": args.projects,
               **{name: summary_ms(values) for name, values in times.items()},
               "dom_messages_after_open": max(c[0] for c in counts),
               "dom_messages_after_one_scroll": max(c[1] for c in counts)}
    log(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
