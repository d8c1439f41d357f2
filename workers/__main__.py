"""``python -m workers``: an RQ worker on MCC's queues (the Procfile's ``worker:`` line).

By default the process is a greenlet pool (``workers.pool``): up to ``MCC_MAX_CONCURRENT_CALLS``
jobs at once, each waiting on the LLM gateway in a greenlet, not a process. ``--fork`` is RQ's
forking worker instead (one job at a time, a work horse forked per job).

The app and every job module are imported here, once, before any job runs, so a job does not
pay for imports (see DESIGN.md, "Pitfalls"). For the forking worker the engine is disposed so
that no pooled database connection crosses a fork. A reaper thread recovers turns whose worker
died and keeps the next run of each periodic job scheduled (``mcc.periodic``).

A fork copies the locks of every thread but only the forking thread: a work horse forked while the
reaper thread held one of SQLAlchemy's locks (mapper configuration, the statement cache, the pool)
would wait forever for a lock nobody will release. So mappers are configured before the reaper
starts, and a fork waits for the reaper's pass to end (``_hold_reaper_across_forks``).
"""
from __future__ import annotations

import sys

FORK = "--fork" in sys.argv[1:]
if not FORK:  # before anything imports socket, ssl, threading or psycopg2
    from gevent import monkey

    monkey.patch_all()
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

import argparse  # noqa: E402
import logging
import os
import threading

from redis import Redis
from rq import Worker
from sqlalchemy.orm import configure_mappers
from rq.serializers import JSONSerializer

from mcc import create_app
from mcc.extensions import db
from mcc.jobs import QUEUES
from mcc.periodic import ensure_scheduled
from mcc.redis_store import get_redis
from mcc.runtime.recovery import reap_forever
from workers import agent, context, github, maintenance  # noqa: F401  (preload job modules)
from workers.pool import run_pool

log = logging.getLogger("workers")
_reaper_pass = threading.Lock()


def _hold_reaper_across_forks() -> None:
    """Every fork (a work horse, the scheduler) waits for the reaper's current pass, then holds it off."""
    os.register_at_fork(before=_reaper_pass.acquire, after_in_parent=_reaper_pass.release,
                        after_in_child=_reaper_pass.release)


def _reaper(app, interval: float, stop: threading.Event) -> None:
    """Recover abandoned turns; keep the next run of every periodic job scheduled. Each pass ends
    with the engine disposed: nothing pooled in the parent when the next horse forks."""
    reap_forever(app, interval, ensure_scheduled, stop, guard=lambda: _reaper_pass,
                 after=lambda: db.engine.dispose())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an MCC RQ worker.")
    parser.add_argument("queues", nargs="*", default=list(QUEUES), help=f"queues (default: {' '.join(QUEUES)})")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--fork", action="store_true",
                        help="RQ's forking worker: one job at a time, a work horse forked per job")
    args = parser.parse_args(argv)

    if not args.fork:  # jobs wait for a pooled connection rather than fail (a request waits 3 s, then 503)
        os.environ.setdefault("MCC_DB_POOL_TIMEOUT", "60")
    app = create_app({"MCC_PROCESS": "worker"})
    context.set_app(app)
    with app.app_context():
        redis = get_redis()
        if redis is None:
            log.error("REDIS_URL is not set: in embedded mode jobs run inside the web process; "
                      "a worker needs Redis.")
            return 2
        configure_mappers()
        db.engine.dispose()
        if args.fork:
            _hold_reaper_across_forks()
        stop = threading.Event()
        threading.Thread(target=_reaper, args=(app, app.config["MCC_REAPER_SECONDS"], stop), daemon=True,
                         name="turn-reaper").start()
        # Maintenance also takes over the RQ scheduler of a worker that died (its lock lasts 61 s);
        # RQ's default of 10 minutes would leave delayed jobs waiting that long.
        try:
            if args.fork:
                worker = Worker(args.queues, connection=redis, serializer=JSONSerializer, maintenance_interval=60)
                log.info("worker %s listening on %s", worker.name, ", ".join(args.queues))
                worker.work(burst=args.burst, logging_level=app.config["MCC_LOG_LEVEL"], with_scheduler=True)
            else:
                run_pool(args.queues, lambda: Redis.from_url(app.config["REDIS_URL"], max_connections=4),
                         JSONSerializer, app.config["MCC_MAX_CONCURRENT_CALLS"], args.burst,
                         app.config["MCC_LOG_LEVEL"])
        finally:
            stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
