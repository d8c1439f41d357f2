"""``GET /metrics``: Prometheus text exposition, read at scrape time from Redis and the database.

Web and worker processes are forked and many; none keeps a metric in memory. What a scrape shows
is read when it happens (a custom collector), and the two things only a process sees are written
to Redis: the HTTP request duration histogram and each web process's Socket.IO connection count (a
key per process that expires when it stops reporting). A request never waits for Redis for this: a
flusher thread per process writes what it added up every second.

``MCC_METRICS_TOKEN`` unset: 404 (no metrics endpoint). Set: ``Authorization: Bearer <token>``
required (401 otherwise).
"""
from __future__ import annotations

import hmac
import logging
import os
import socket
import threading

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mcc.errors import error_response
from mcc.extensions import db
from mcc.jobs import QUEUES, get_queue
from mcc.logging_setup import request_duration
from mcc.models.budget import BudgetLimit, CostDaily
from mcc.models.github import WebhookDelivery
from mcc.models.project import Project
from mcc.models.turn import TURN_STATUSES, Turn
from mcc.redis_store import get_redis
from mcc.runtime import gate
from mcc.services import budget, emergency
from mcc.services.periods import current_period

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
HTTP_KEY = "mcc:metrics:http"
SOCKETS_KEY = "mcc:metrics:sockets:"
PROCESS = f"{socket.gethostname()}:{os.getpid()}"
# Embedded mode (no Redis): the one process keeps them itself.
_local_http: dict[str, float] = {}
_local_sockets: dict[str, int] = {}
_local_lock = threading.Lock()


# --- what processes write as it happens --------------------------------------------------------
# A request never waits for Redis: observations are added up in the process and written by a
# flusher thread every FLUSH_SECONDS (and by a scrape of this process, before it reads).

FLUSH_SECONDS = 1.0
MAX_PENDING = 20_000  # distinct fields kept while Redis is unreachable; beyond, new ones are dropped
_pending: dict[str, float] = {}
_socket_report: dict = {}
_flusher = {"pid": None}


def _bucket(seconds: float) -> str:
    return next((repr(b) for b in BUCKETS if seconds <= b), "+Inf")


def _add(target: dict, fields: dict) -> None:
    for field, amount in fields.items():
        if field in target or len(target) < MAX_PENDING:
            target[field] = target.get(field, 0) + amount


def observe_request(response):
    """after_request: one observation of the duration histogram, by route template, method and status."""
    if request.blueprint == "health":
        # Probes are not observed: /healthz must answer while Redis hangs (the write would wait
        # MCC_REDIS_TIMEOUT), and a probe every few seconds would swamp the histogram anyway.
        return response
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    labels = f"{rule}\t{request.method}\t{response.status_code}"
    duration = request_duration()
    fields = {f"{labels}\tb\t{_bucket(duration)}": 1, f"{labels}\tcount": 1, f"{labels}\tsum": duration}
    with _local_lock:
        _add(_local_http if get_redis() is None else _pending, fields)
    _ensure_flusher(current_app._get_current_object())
    return response


def report_socket_connections(count: int, ttl: float) -> None:
    """This web process holds ``count`` Socket.IO connections (forgotten ``ttl`` s after its last flush)."""
    with _local_lock:
        _local_sockets[PROCESS] = count
        _socket_report.update(count=count, ttl=max(int(ttl), int(FLUSH_SECONDS * 10)))
    _ensure_flusher(current_app._get_current_object())


def flush(app) -> None:
    """Write what this process observed to Redis; kept for the next flush when Redis is away."""
    with _local_lock:
        pending = dict(_pending)
        _pending.clear()
        sockets = dict(_socket_report)
    if not pending and not sockets:
        return
    try:
        with app.app_context():
            redis = get_redis()
            if redis is None:
                return
            pipe = redis.pipeline(transaction=False)
            for field, amount in pending.items():
                if field.endswith("\tsum"):
                    pipe.hincrbyfloat(HTTP_KEY, field, amount)
                else:
                    pipe.hincrby(HTTP_KEY, field, int(amount))
            if sockets:
                pipe.set(SOCKETS_KEY + PROCESS, sockets["count"], ex=sockets["ttl"])
            pipe.execute()
    except Exception:
        with _local_lock:
            _add(_pending, pending)
        log.debug("could not write metrics to Redis; kept for the next flush", exc_info=True)


def _ensure_flusher(app) -> None:
    """One flusher thread per process (a forked process starts its own)."""
    if _flusher["pid"] == os.getpid():
        return
    with _local_lock:
        if _flusher["pid"] == os.getpid():
            return
        _flusher["pid"] = os.getpid()

    def run():
        while True:
            threading.Event().wait(FLUSH_SECONDS)
            flush(app)

    threading.Thread(target=run, daemon=True, name="metrics-flusher").start()


# --- what a scrape reads -------------------------------------------------------------------------

def _http_histogram(raw: dict[str, str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("mcc_http_request_duration_seconds", "HTTP request duration",
                                   labels=["route", "method", "status"])
    series: dict[tuple, dict] = {}
    for field, value in raw.items():
        route, method, status, kind, *rest = field.split("\t")
        entry = series.setdefault((route, method, status), {"buckets": {}, "count": 0, "sum": 0.0})
        if kind == "b":
            entry["buckets"][rest[0]] = entry["buckets"].get(rest[0], 0) + int(value)
        elif kind == "count":
            entry["count"] = int(value)
        else:
            entry["sum"] = float(value)
    for labels, entry in sorted(series.items()):
        cumulative, buckets = 0, []
        for bound in [repr(b) for b in BUCKETS] + ["+Inf"]:
            cumulative += entry["buckets"].get(bound, 0)
            buckets.append((bound, cumulative))
        family.add_metric(list(labels), buckets, entry["sum"])
    return family


class MccCollector(Collector):
    def __init__(self, app):
        self.app = app

    def collect(self):
        with self.app.app_context():
            yield from self._database_families()
            yield from self._redis_families()

    def _database_families(self):
        from sqlalchemy import func, select

        try:
            paused = GaugeMetricFamily("mcc_emergency_paused", "1 while every agent is paused (emergency stop)")
            paused.add_metric([], 1 if emergency.current_state() else 0)
            yield paused

            counts = dict(db.session.execute(select(Turn.status, func.count()).group_by(Turn.status)).all())
            turns = GaugeMetricFamily("mcc_turns", "Agent turns by status", labels=["status"])
            for status in TURN_STATUSES:
                turns.add_metric([status], counts.get(status, 0))
            yield turns

            deliveries = GaugeMetricFamily("mcc_webhook_deliveries", "GitHub webhook deliveries by status",
                                           labels=["status"])
            for status, count in db.session.execute(select(WebhookDelivery.status, func.count())
                                                    .group_by(WebhookDelivery.status)).all():
                deliveries.add_metric([status], count)
            yield deliveries

            day = current_period("daily")
            spend = GaugeMetricFamily("mcc_project_spend_today_usd", "LLM spend of the current day per project",
                                      labels=["project_id", "project"])
            spent = dict(db.session.execute(select(CostDaily.project_id, func.sum(CostDaily.cost_usd))
                                            .where(CostDaily.day >= day.start, CostDaily.day < day.end)
                                            .group_by(CostDaily.project_id)).all())
            for project_id, name in db.session.execute(select(Project.id, Project.name)).all():
                spend.add_metric([str(project_id), name], float(spent.get(project_id) or 0))
            yield spend

            limit_amount = GaugeMetricFamily("mcc_budget_limit_usd", "Budget limit amounts",
                                             labels=["limit_id", "name", "scope_type", "scope_id", "period", "action"])
            limit_spent = GaugeMetricFamily("mcc_budget_limit_spent_usd", "Spend in the limit's current period",
                                            labels=["limit_id", "name", "scope_type", "scope_id", "period", "action"])
            for limit in db.session.scalars(select(BudgetLimit)):
                labels = [str(limit.id), limit.name, limit.scope_type, str(limit.scope_id or ""), limit.period,
                          limit.action_on_exceed]
                limit_amount.add_metric(labels, float(limit.amount_usd))
                limit_spent.add_metric(labels, float(budget.spent_from_rollup(limit, budget.limit_period(limit))))
            yield limit_amount
            yield limit_spent
        finally:
            db.session.remove()

    def _redis_families(self):
        from rq import Worker
        from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

        in_flight = GaugeMetricFamily("mcc_llm_calls_in_flight", "LLM calls under way (through the call gate)")
        in_flight.add_metric([], gate.calls_in_flight())
        yield in_flight

        redis = get_redis()
        sockets = GaugeMetricFamily("mcc_socket_connections", "Socket.IO connections per web process",
                                    labels=["process"])
        if redis is None:
            for process, count in _local_sockets.items():
                sockets.add_metric([process], count)
            yield sockets
            yield _http_histogram({k: str(v) for k, v in _local_http.items()})
            return
        for key in redis.scan_iter(f"{SOCKETS_KEY}*", count=500):
            value = redis.get(key)
            if value is not None:
                sockets.add_metric([key.decode()[len(SOCKETS_KEY):]], int(value))
        yield sockets

        jobs = GaugeMetricFamily("mcc_queue_jobs", "RQ jobs per queue and state", labels=["queue", "state"])
        for name in QUEUES:
            queue = get_queue(name)
            jobs.add_metric([name, "queued"], queue.count)
            for state, registry in (("started", StartedJobRegistry), ("scheduled", ScheduledJobRegistry),
                                    ("failed", FailedJobRegistry)):
                jobs.add_metric([name, state], registry(queue=queue).count)
        yield jobs
        # A worker process registers one RQ worker per loop of its greenlet pool (workers/pool.py):
        # processes are told apart by host and pid, the loops are the jobs it can run at once.
        loops = Worker.all(connection=redis)
        workers = GaugeMetricFamily("mcc_workers", "Worker processes alive")
        workers.add_metric([], len({(loop.hostname, loop.pid) for loop in loops}))
        yield workers
        slots = GaugeMetricFamily("mcc_worker_slots", "RQ worker loops alive: jobs the workers can run at once")
        slots.add_metric([], len(loops))
        yield slots

        yield _http_histogram({k.decode(): v.decode() for k, v in redis.hgetall(HTTP_KEY).items()})


def _registry(app) -> CollectorRegistry:
    registry = app.extensions.get("mcc_metrics_registry")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MccCollector(app))
        app.extensions["mcc_metrics_registry"] = registry
    return registry


@bp.get("/metrics")
def metrics():
    token = current_app.config.get("MCC_METRICS_TOKEN")
    if not token:
        return error_response(404, "RESOURCE_NOT_FOUND", "No such resource.")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = error_response(401, "UNAUTHORIZED", "Send Authorization: Bearer <MCC_METRICS_TOKEN>.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    app = current_app._get_current_object()
    flush(app)  # this process's own observations, including this scrape's predecessors
    body = generate_latest(_registry(app))
    return Response(body, content_type=CONTENT_TYPE_LATEST)
