"""Periodic jobs on RQ's own scheduler (the one every ``python -m workers`` runs).

Each periodic job runs at the multiples of its interval (epoch-aligned "slots"). Every worker,
when it starts and on every reaper pass, makes sure the next slot of each job is scheduled: the
slot is claimed in Redis (``SET NX``) and the job gets a deterministic id, so however many workers
run, each slot runs once. A slot missed while no worker ran runs as soon as one starts (RQ's
scheduler enqueues what is overdue).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import timezone

from flask import current_app
from rq.exceptions import NoSuchJobError

from mcc.jobs import enqueue, get_queue
from mcc.redis_store import get_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    name: str
    func: str
    interval_setting: str
    queue: str
    description: str

    @property
    def interval(self) -> float:
        return float(current_app.config[self.interval_setting])

    def next_slot(self, now: float | None = None) -> int:
        return math.floor((now if now is not None else time.time()) / self.interval) + 1

    def job_id(self, slot: int) -> str:
        return f"mcc-periodic-{self.name}-{slot}"


PERIODIC = (
    Periodic("purge-expired-tokens", "workers.maintenance.purge_expired_tokens", "MCC_TOKEN_PURGE_INTERVAL",
             "default", "delete token revocations and refresh tokens past their expiry"),
    Periodic("github-sync-all", "workers.github.sync_all", "MCC_GITHUB_SYNC_INTERVAL", "github",
             "safety-net full sync of every GitHub project; requeue stuck webhook deliveries"),
    Periodic("reconcile-cost-rollup", "workers.maintenance.reconcile_cost_rollup", "MCC_ROLLUP_RECONCILE_INTERVAL",
             "default", "make the daily cost rollup of today and yesterday agree with the cost ledger"),
)


def ensure_scheduled() -> list[str]:
    """Schedule the next slot of every enabled periodic job unless some worker already did."""
    redis = get_redis()
    if redis is None:
        return []
    scheduled = []
    now = time.time()
    for periodic in PERIODIC:
        interval = periodic.interval
        if interval <= 0:
            continue
        slot = periodic.next_slot(now)
        claim = f"mcc:periodic:{periodic.name}:{slot}"
        if not redis.set(claim, "1", nx=True, ex=int(interval * 2) + 60):
            continue
        enqueue(periodic.func, queue=periodic.queue, job_id=periodic.job_id(slot),
                delay=max(slot * interval - now, 0.001),
                description=f"periodic {periodic.name}: {periodic.description}")
        scheduled.append(periodic.job_id(slot))
    return scheduled


def schedule_report() -> list[dict]:
    """What ``flask jobs --scheduled`` prints: every periodic job, its interval and next run."""
    redis = get_redis()
    rows = []
    for periodic in PERIODIC:
        interval = periodic.interval
        next_run = None
        if redis is not None and interval > 0:
            registry = get_queue(periodic.queue).scheduled_job_registry
            for slot in (periodic.next_slot(), periodic.next_slot() - 1):
                try:
                    when = registry.get_scheduled_time(periodic.job_id(slot))
                except NoSuchJobError:  # not scheduled (yet): no worker ran since the last slot
                    continue
                next_run = when.astimezone(timezone.utc).isoformat()
                break
        rows.append({"name": periodic.name, "function": periodic.func, "queue": periodic.queue,
                     "interval_seconds": interval if interval > 0 else None,
                     "schedule": f"every {interval:g} s" if interval > 0 else f"off ({periodic.interval_setting}=0)",
                     "next_run": next_run, "description": periodic.description})
    return rows


_in_process_slots: dict[str, int] = {}


def run_due_in_process() -> list[str]:
    """Embedded mode (no Redis, no worker): the web process's reaper thread runs each periodic job
    itself, once per slot (and once when the process starts)."""
    from rq.utils import import_attribute

    ran = []
    now = time.time()
    for periodic in PERIODIC:
        if periodic.interval <= 0:
            continue
        slot = periodic.next_slot(now) - 1
        if _in_process_slots.get(periodic.name) == slot:
            continue
        _in_process_slots[periodic.name] = slot
        try:
            import_attribute(periodic.func)()
            ran.append(periodic.name)
        except Exception:
            log.exception("periodic job %s failed", periodic.name)
    return ran
