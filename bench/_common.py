"""Shared plumbing of the benchmark scripts: a throwaway database, a private Redis database,
real web processes, percentiles and the machine description.

Nothing here is product code; the scripts import it as ``bench._common`` (run them from the
repository root: ``.venv/bin/python bench/<name>.py``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import redis as redis_lib
import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = str(Path(sys.executable).parent)
ADMIN_DB_URL = os.environ.get("MCC_BENCH_ADMIN_DB", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("MCC_BENCH_REDIS", "redis://127.0.0.1:6379")
# The key the test suite uses to claim a Redis database: holding it keeps test runs off ours.
REDIS_LOCK_KEY = "mcc-test-run-lock"
ADMIN_USER, ADMIN_PASSWORD = "benchadmin", "bench-password-123"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(*args) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


# --- statistics -----------------------------------------------------------------------------

def pct(values, p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50": round(pct(ms, 50), 3), "p90": round(pct(ms, 90), 3),
            "p99": round(pct(ms, 99), 3), "max": round(max(ms), 3) if ms else None,
            "mean": round(statistics.fmean(ms), 3) if ms else None}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


# --- machine ---------------------------------------------------------------------------------

def machine() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": model, "mem_gib": round(mem_kb / 1024 / 1024, 1),
            "loadavg_1m_at_start": round(load[0], 2), "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


# --- PostgreSQL -------------------------------------------------------------------------------

def _pg_connect(url: str):
    from sqlalchemy.engine import make_url

    u = make_url(url.replace("postgres://", "postgresql://", 1))
    return psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                            dbname=u.database or "postgres")


def pg_connect(url: str, autocommit: bool = False):
    conn = _pg_connect(url)
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def throwaway_database():
    """CREATE DATABASE mcc_bench_<random>; yield its URL; DROP it (WITH FORCE) at the end."""
    from sqlalchemy.engine import make_url

    name = f"mcc_bench_{uuid.uuid4().hex[:10]}"
    admin = pg_connect(ADMIN_DB_URL, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    log(f"created database {name}")
    try:
        yield make_url(ADMIN_DB_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        log(f"dropped database {name}")


# --- Redis -------------------------------------------------------------------------------------

@contextlib.contextmanager
def redis_server(kind: str):
    """Base URL of the Redis the run uses.

    "shared": the machine's Redis (127.0.0.1:6379). Its database index isolates keys but NOT pub/sub:
    Redis channels are server-wide, so every process on it that uses Flask-SocketIO's default channel
    ("flask-socketio") receives every other process's events, whatever their database index.
    "private" (default): a redis-server of our own on a free port, stopped at the end, so concurrent
    test runs on the shared Redis cannot add their events to the measurement.
    """
    if kind == "shared":
        yield REDIS_BASE_URL
        return
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--databases", "16"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis_lib.Redis.from_url(url).ping()
                break
            except redis_lib.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("private redis-server did not start")
                time.sleep(0.05)
        log(f"private redis-server on port {port} (pid {proc.pid})")
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def private_redis(preferred: int = 13, base_url: str = REDIS_BASE_URL):
    """Claim an unused Redis database (13 first, then 14, 15, 12, ...), flush it, flush it again after."""
    run = f"bench-{uuid.uuid4().hex}"
    order = [preferred] + [i for i in (14, 15, 12, 11, 10, 9) if i != preferred]
    for index in order:
        client = redis_lib.Redis.from_url(f"{base_url}/{index}")
        if client.dbsize() == 0 and client.set(REDIS_LOCK_KEY, run, nx=True, ex=3600):
            break
    else:
        raise RuntimeError("no free Redis database for the benchmark")
    client.flushdb()
    client.set(REDIS_LOCK_KEY, run, ex=3600)
    log(f"using Redis database {index} of {base_url}")
    try:
        yield f"{base_url}/{index}"
    finally:
        client.flushdb()
        client.close()


def exit_on_sigterm() -> None:
    """SIGTERM runs the cleanup (finally blocks) like Ctrl-C does: databases dropped, servers stopped."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def group_status(pgid: int) -> dict:
    """Threads and resident memory of every live process in a process group (gunicorn master + worker)."""
    threads, rss_kb = 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("Threads:"):
                    threads += int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return {"threads": threads, "rss_mib": round(rss_kb / 1024, 1)}


# --- the app's environment ---------------------------------------------------------------------

def bench_env(database_url: str, redis_url: str, instance: Path) -> dict:
    """Production settings, with the per-IP API rate limit raised: one client sends every request."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MCC_ENV": "production",
        "MCC_SECRET_KEY": secrets.token_urlsafe(48),
        "MCC_INSTANCE_PATH": str(instance),
        "MCC_RATE_LIMIT": "10000000 per minute",
        "MCC_ACCESS_TOKEN_SECONDS": "7200",
        "MCC_LOG_LEVEL": "INFO",
    }


def migrate(env: dict) -> None:
    started = time.monotonic()
    subprocess.run([f"{VENV_BIN}/flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, check=True,
                   env={**os.environ, **env, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log(f"flask db upgrade: {time.monotonic() - started:.1f} s")


def make_app(env: dict):
    from mcc import create_app

    return create_app(env=env)


@contextlib.contextmanager
def workdir():
    path = Path(tempfile.mkdtemp(prefix="mcc-bench-"))
    try:
        yield path
    finally:
        if os.environ.get("MCC_BENCH_KEEP_LOGS"):
            log(f"logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- processes ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_web() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError("Procfile has no web: line")


def with_threads(command: str, threads: int) -> str:
    return re.sub(r"--threads\s+\d+", f"--threads {threads}", command)


def with_app(command: str, app: str) -> str:
    return re.sub(r"\bwsgi:app\b", app, command)


class WebProcess:
    """A gunicorn command run through bash in its own session (as a Procfile runner would)."""

    def __init__(self, command: str, env: dict, log_path: Path, name: str):
        self.command, self.name, self.log_path = command, name, log_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **env, "PORT": str(self.port),
                    "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.output()[-3000:]}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    log(f"{name} up on {self.base}: {command}")
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{name} did not answer /healthz within 40 s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> None:
        """Stop the process group this object started (its pid is the group id)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()

    def errors(self) -> list[str]:
        """Tracebacks or error lines in the log (a benchmark must not hide product failures)."""
        lines = self.output().splitlines()
        return [line for line in lines if "Traceback" in line or '"level": "ERROR"' in line
                or '"level": "CRITICAL"' in line or " ERROR " in line or "[CRITICAL]" in line
                or "[ERROR]" in line][:20]


def login(base: str) -> str:
    response = requests.post(f"{base}/api/v1/auth/login",
                             json={"username": ADMIN_USER, "password": ADMIN_PASSWORD}, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]
