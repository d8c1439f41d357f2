"""The greenlet pool: one worker process runs up to ``MCC_MAX_CONCURRENT_CALLS`` jobs at once.

A turn spends nearly all its time waiting on the LLM gateway. Under gevent (monkey-patched
sockets, psycopg2 made cooperative by psycogreen) that wait costs a greenlet, not a process:
the pool is that many RQ ``SimpleWorker`` loops in one process, each taking one job at a time
from Redis and running it in place (no fork: the app, the job modules and the pooled
connections preloaded once serve every job). RQ stays the unit of durable work: each loop is a
registered RQ worker with its own heartbeat and started-job registry, and a turn's state lives
in PostgreSQL, so a process killed mid-turn is recovered by the reaper as before.
"""
from __future__ import annotations

import logging
import signal

import gevent
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.scheduler import RQScheduler
from rq.timeouts import BaseDeathPenalty
from rq.worker import WorkerStatus

log = logging.getLogger("workers")


class GreenletDeathPenalty(BaseDeathPenalty):
    """A job's timeout as a ``gevent.Timeout`` in its own greenlet (SIGALRM is one per process)."""

    def setup_death_penalty(self):
        self._timer = None
        if self._timeout > 0:
            self._timer = gevent.Timeout(self._timeout, self._exception(f"Task exceeded maximum timeout value "
                                                                        f"({self._timeout} seconds)"))
            self._timer.start()

    def cancel_death_penalty(self):
        if self._timer is not None:
            self._timer.close()


class _SchedulerGreenlet:
    """What RQ's worker asks of the scheduler's process, for a greenlet."""

    def __init__(self, greenlet):
        self.greenlet, self.pid = greenlet, None

    def is_alive(self) -> bool:
        return not self.greenlet.dead


class GreenletScheduler(RQScheduler):
    """RQ's scheduler in a greenlet of the pool's process. RQ forks it into a process of its own,
    and a fork of a gevent process carries every greenlet along: the child would resume all the
    pool's loops on the parent's sockets."""

    def _install_signal_handlers(self):
        pass

    def start(self):
        self._status = self.Status.STARTED
        self._process = _SchedulerGreenlet(gevent.spawn(self.work))
        return self._process

    def stop_greenlet(self):
        if self._process is not None:
            self._process.greenlet.kill(block=False)
            self.stop()


class PoolWorker(SimpleWorker):
    """One loop of the pool; the process, not each loop, answers SIGTERM/SIGINT (``run_pool``)."""

    death_penalty_class = GreenletDeathPenalty

    def _start_scheduler(self, burst=False, logging_level="INFO", *args, **kwargs):
        self.scheduler = GreenletScheduler(self.queues, connection=self.connection, logging_level=logging_level,
                                           serializer=self.serializer)
        if self.scheduler.acquire_locks(auto_start=not burst) and burst:
            try:
                self.scheduler.register_birth()
                self.scheduler.enqueue_scheduled_jobs()
            finally:
                self.scheduler.release_locks()
                self.scheduler.register_death()

    def stop_scheduler(self):
        self.scheduler.stop_greenlet()

    def _install_signal_handlers(self):
        pass

    def subscribe(self):
        """No RQ command channel per loop (a connection each, and MCC sends none: a turn is stopped
        through ``mcc.services.cancellation``)."""

    def unsubscribe(self):
        pass


def run_pool(queues, connect, serializer, size: int, burst: bool, logging_level: str) -> None:
    """Run ``size`` worker loops until they stop; the first one also runs RQ's scheduler.

    Each loop has its own Redis client (``connect()``): it blocks on it while waiting for a job,
    and the jobs draw on MCC's own bounded pool, not on it."""
    workers = [PoolWorker(queues, connection=connect(), serializer=serializer, maintenance_interval=60)
               for _ in range(size)]

    loops: list = []

    def stop(signum, frame):
        """Warm shutdown: a busy loop ends its job first, an idle one stops waiting for the next;
        a second signal stops everything now (the reaper recovers the turns cut short)."""
        if any(worker._stop_requested for worker in workers):
            raise SystemExit(1)
        log.info("worker pool: stopping %s loops after their current job", len(workers))
        for worker, loop in zip(workers, loops):
            worker._stop_requested = True
            if worker.get_state() != WorkerStatus.BUSY:
                loop.kill(StopRequested, block=False)

    log.info("worker pool of %s loops listening on %s", size, ", ".join(queues))
    loops.extend(gevent.spawn(worker.work, burst=burst, logging_level=logging_level, with_scheduler=(i == 0))
                 for i, worker in enumerate(workers))
    gevent.signal_handler(signal.SIGTERM, stop, signal.SIGTERM, None)
    gevent.signal_handler(signal.SIGINT, stop, signal.SIGINT, None)
    gevent.joinall(loops)
