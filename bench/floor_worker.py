"""An RQ worker for the floor's queue, with ``bench.floor_jobs`` preloaded.

    python bench/floor_worker.py fork [queue]   # rq.Worker: a forked work horse per job (the issue's floor)
    python bench/floor_worker.py pool [queue]   # the greenlet pool MCC's `python -m workers` runs (workers/pool.py)

The queue defaults to ``floor``.

Environment: DATABASE_URL, REDIS_URL; MCC_MAX_CONCURRENT_CALLS sizes the pool (default 100).
"""
from __future__ import annotations

import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else "fork"
QUEUE = sys.argv[2] if len(sys.argv) > 2 else "floor"
if MODE == "pool":  # as workers/__main__.py: before anything imports socket or psycopg2
    from gevent import monkey

    monkey.patch_all()
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

import os  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

import bench.floor_jobs  # noqa: E402,F401  (preloaded: a forked horse inherits it)


def main() -> None:
    url = os.environ["REDIS_URL"]
    if MODE == "pool":
        from workers.pool import run_pool

        run_pool([QUEUE], lambda: Redis.from_url(url), JSONSerializer,
                 int(os.environ.get("MCC_MAX_CONCURRENT_CALLS", "100")), burst=False, logging_level="WARNING")
    else:
        Worker([QUEUE], connection=Redis.from_url(url), serializer=JSONSerializer).work(logging_level="WARNING")


if __name__ == "__main__":
    main()
