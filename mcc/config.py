"""The one place that reads the environment.

Every setting MCC understands is listed in ``VARIABLES`` (name, default, meaning); README's
variables table is generated from the same list so the two cannot drift apart.
"""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from mcc.llm.prices import Price, load_prices

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# name, default, meaning (kept short: it is printed as the README table)
VARIABLES: list[tuple[str, str, str]] = [
    ("MCC_ENV", "development", "`production` turns on JSON logs and requires `MCC_SECRET_KEY`"),
    ("DATABASE_URL", "SQLite file `instance/mcc.db`",
     "`postgres://`, `postgresql://` or `postgresql+psycopg2://`; always served by psycopg2"),
    ("REDIS_URL", "unset (embedded mode)",
     "Redis for RQ, the Socket.IO queue, rate limits and token revocation"),
    ("MCC_SECRET_KEY", "generated once into `instance/secret_key` (development only)",
     "signs tokens and seals stored secrets; required when `MCC_ENV=production`, at least 32 bytes"),
    ("MCC_RATE_LIMIT", "100 per minute", "requests per client IP across the whole API"),
    ("MCC_LOGIN_RATE_LIMIT", "10 per minute",
     "requests per client IP to each of login, 2FA verify and refresh (separate counters)"),
    ("MCC_INSTANCE_PATH", "`instance/` in the checkout", "where the SQLite file and the development secret live"),
    ("MCC_DB_POOL_SIZE", "10", "pooled database connections per process (plus MCC_DB_MAX_OVERFLOW)"),
    ("MCC_DB_MAX_OVERFLOW", "20", "extra connections a busy process may open"),
    ("MCC_DB_POOL_TIMEOUT", "3", "seconds a request or socket connect waits for a pooled database connection (then 503)"),
    ("MCC_DB_CONNECT_TIMEOUT", "3", "seconds to open a database connection (then 503)"),
    ("MCC_REDIS_MAX_CONNECTIONS", "200",
     "Redis connections per process (MCC, RQ and the rate limiter share one blocking pool; Socket.IO's queue has its own)"),
    ("MCC_REDIS_POOL_TIMEOUT", "2", "seconds a request or socket connect waits for a free Redis connection (then 503)"),
    ("MCC_REDIS_TIMEOUT", "2", "seconds to connect to Redis and for one Redis command (then 503)"),
    ("MCC_LOGIN_LOCKOUT", "5 per 15 minutes",
     "failed logins of one username from one IP before that pair is locked out"),
    ("MCC_LOGIN_IP_LOCKOUT", "50 per 15 minutes", "failed logins from one IP before the IP is locked out"),
    ("MCC_2FA_LOCKOUT", "5 per 15 minutes", "wrong 2FA codes per user before 2FA verify is locked"),
    ("MCC_TRUSTED_PROXIES", "0", "reverse proxies in front whose `X-Forwarded-For` is trusted"),
    ("MCC_ACCESS_TOKEN_SECONDS", "900", "access token lifetime"),
    ("MCC_REFRESH_TOKEN_DAYS", "30", "refresh token lifetime"),
    ("MCC_REFRESH_REUSE_GRACE_SECONDS", "10",
     "seconds a rotated refresh token may be presented again for a new pair in the same session instead of "
     "revoking it (a reload or lost answer mid-refresh); 0: off, any reuse revokes (docs/security.md)"),
    ("MCC_2FA_TOKEN_SECONDS", "300", "lifetime of the temp token between password and 2FA code"),
    ("MCC_MAX_BODY_BYTES", "1048576", "largest accepted request body"),
    ("MCC_LOG_LEVEL", "INFO", "log level"),
    ("MCC_LOG_FORMAT", "`json` in production, `text` otherwise", "`json` or `text`"),
    ("MCC_SOCKETIO_CHANNEL", "`mcc-socketio-<redis db>`",
     "Redis pub/sub channel of the Socket.IO queue; deployments sharing a Redis server need distinct ones"),
    ("MCC_SOCKET_RATE_LIMIT", "100 per minute", "client events per Socket.IO connection"),
    ("MCC_SOCKET_SWEEP_SECONDS", "15", "how often live sockets are checked for expired or revoked tokens"),
    ("MCC_TIMEZONE", "UTC", "timezone of calendar days, weeks and months (stats, budgets)"),
    ("MCC_SOCKETIO_ASYNC_MODE", "`gevent` under gunicorn's gevent worker, else `threading`",
     "`gevent` (the Procfile's; psycopg2 is made cooperative) or `threading`; anything else refuses to start"),
    ("MCC_SOCKET_CONCURRENCY", "32", "socket connects authenticated at once per process; the others queue"),
    ("MCC_SOCKET_QUEUE_SECONDS", "2",
     "longest wait of a queued socket connect; then `connect_error` SERVICE_UNAVAILABLE (retry later)"),
    ("MCC_SOCKET_AUTH_SECONDS", "5", "a socket that has not completed an authenticated connect by then is closed"),
    ("MCC_SOCKET_MAX_PER_IP", "50",
     "open sockets per client IP (the forwarded one behind MCC_TRUSTED_PROXIES); more are refused"),
    ("MCC_CORS_ORIGINS", "unset (same origin only)", "comma-separated origins allowed to open Socket.IO"),
    ("MCC_LLM_BASE_URL", "https://openrouter.ai/api/v1", "OpenAI-compatible Chat Completions base URL"),
    ("MCC_LLM_API_KEY", "unset (simulated agents)", "gateway API key; unset: a labelled simulated provider answers"),
    ("MCC_LLM_TIMEOUT", "120", "seconds one gateway request may take"),
    ("MCC_LLM_MAX_RETRIES", "4", "retries of 429/5xx/connection failures (exponential backoff, jitter)"),
    ("MCC_LLM_BACKOFF_BASE", "0.5", "first backoff in seconds (doubles each retry)"),
    ("MCC_LLM_BACKOFF_MAX", "30", "longest backoff in seconds"),
    ("MCC_LLM_USAGE_ACCOUNTING", "on for OpenRouter URLs", "send `usage: {include: true}` to get `usage.cost`"),
    ("MCC_LLM_PRICES", "unset", "JSON `{model: {input, output}}` USD per million tokens, over the built-in table"),
    ("MCC_LLM_PRICES_FILE", "unset", "path of a JSON file shaped like MCC_LLM_PRICES"),
    ("MCC_BUDGET_UNKNOWN_PRICE", "15,75", "USD per million input,output tokens reserved for a model with no price"),
    ("MCC_MAX_TASK_ATTEMPTS", "3", "loops back to the coder (tests failed, changes requested, rejected) before a task fails"),
    ("MCC_AGENT_TASK_LIMIT", "1", "open tasks an agent may hold when a person assigns one (else 409 AGENT_BUSY)"),
    ("MCC_STAGE_REMINDERS", "2", "extra turns an agent gets when its pipeline turn ends without the stage's tool; then the task waits for a person"),
    ("MCC_CONTEXT_TOKENS", "100000", "prompt budget: history is trimmed (oldest first) to fit"),
    ("MCC_MAX_CHAIN", "8", "agent turns that may follow one human message, first reply included"),
    ("MCC_MAX_TOOL_STEPS", "8", "tool round trips inside one turn"),
    ("MCC_TURN_HEARTBEAT_SECONDS", "10", "liveness beat of a running turn; 3 missed beats = abandoned"),
    ("MCC_TURN_MAX_ATTEMPTS", "2", "runs of a turn whose worker died before it is marked failed"),
    ("MCC_REAPER_SECONDS", "15", "how often each worker looks for abandoned turns"),
    ("MCC_MAX_CONCURRENT_CALLS", "100",
     "jobs (so LLM calls) a worker process runs at once, each waiting in a greenlet (`--fork` worker: 1)"),
    ("MCC_CANCEL_POLL_SECONDS", "0.1", "how often a streaming LLM call checks whether it was told to stop"),
    ("MCC_VELOCITY_LIMIT", "unset (off)",
     "USD a project may spend in a window, e.g. `5 per 10 minutes`; crossing it pauses the project's agents"),
    ("MCC_REQUIRE_2FA_FOR", "unset", "acts for which 2FA is mandatory, of `resume,limits,merge` (step-up: 403 "
     "TWO_FACTOR_REQUIRED without a fresh code in `X-MCC-TOTP`)"),
    ("MCC_LOOP_REPEATS", "3", "same tool call with the same arguments this many times in a turn stops the turn (0: off)"),
    ("MCC_AGENT_BUSY_RETRY_SECONDS", "2", "delay before retrying a turn whose agent is busy elsewhere"),
    ("MCC_GITHUB_API_URL", "https://api.github.com", "GitHub REST API base (GitHub Enterprise: `https://HOST/api/v3`)"),
    ("MCC_GITHUB_TOKEN", "unset", "a token for every project without its own GitHub App installation"),
    ("MCC_GITHUB_APP_ID", "unset", "GitHub App id for projects that set no `github_app_id`"),
    ("MCC_GITHUB_APP_PRIVATE_KEY", "unset", "the App's private key: PEM text (`\\n` escapes allowed) or a file path"),
    ("MCC_GITHUB_WEBHOOK_SECRET", "unset (webhooks refused, 503)",
     "secret of `X-Hub-Signature-256` at `/webhooks/github`; a project may have its own (its own URL)"),
    ("MCC_GITHUB_WEBHOOK_RATE_LIMIT", "1000 per minute", "webhook deliveries per sender IP (not under MCC_RATE_LIMIT)"),
    ("MCC_GITHUB_WEBHOOK_CONCURRENCY", "4",
     "webhook requests one web process reads and verifies at once; more wait up to 5 s, then 503"),
    ("MCC_GITHUB_WEBHOOK_MAX_BYTES", "26214400", "largest accepted webhook body (GitHub caps payloads at 25 MB)"),
    ("MCC_GITHUB_WEBHOOK_READ_SECONDS", "10",
     "seconds a webhook body may take to arrive once its slot is taken; slower: 408 and the slot is freed"),
    ("MCC_GITHUB_TIMEOUT", "30", "seconds one GitHub API request may take"),
    ("MCC_GITHUB_MAX_RETRIES", "3", "retries of GitHub 5xx and connection failures (exponential backoff)"),
    ("MCC_GITHUB_BACKOFF_BASE", "1", "first backoff in seconds (doubles each retry)"),
    ("MCC_GITHUB_RATE_LIMIT_WAIT", "60",
     "longest wait for a GitHub rate limit to reset before failing (jobs; web requests wait 5 s at most)"),
    ("MCC_GITHUB_SYNC_INTERVAL", "3600", "seconds between safety-net full syncs of each project (0: off)"),
    ("MCC_GITHUB_ALLOWED_REPOS", "unset (any repository; a warning at start)",
     "comma-separated owners (`acme`) and repositories (`acme/app`) projects may be bound to; others: 422"),
    ("MCC_PROTECTED_PATHS", "`.github/workflows/,.github/actions/,.github/CODEOWNERS`",
     "comma-separated repository paths agents may not write or delete (`/` at the end: a folder)"),
    ("MCC_TOKEN_PURGE_INTERVAL", "86400", "seconds between purges of expired refresh tokens and revocations (0: off)"),
    ("MCC_ROLLUP_RECONCILE_INTERVAL", "3600",
     "seconds between checks that the daily cost rollup of today and yesterday matches the ledger (0: off)"),
    ("MCC_METRICS_TOKEN", "unset (`/metrics` answers 404)",
     "bearer token Prometheus must send to scrape `/metrics` (`Authorization: Bearer ...`)"),
    ("RQ_DASHBOARD_USERNAME", "unset", "basic-auth user of the `rqdashboard:` process"),
    ("RQ_DASHBOARD_PASSWORD", "unset", "basic-auth password of the `rqdashboard:` process"),
    ("RQ_DASHBOARD_BIND", "127.0.0.1", "address of the `rqdashboard:` process (`0.0.0.0` to serve other hosts, behind TLS)"),
    ("RQ_DASHBOARD_PORT", "9181", "port of the `rqdashboard:` process"),
    ("PORT", "5000", "port the web process binds (Procfile, quickstart)"),
]


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


DEFAULT_PROTECTED_PATHS = ".github/workflows/,.github/actions/,.github/CODEOWNERS"


def _list(value: str | None, default: str) -> list[str]:
    """A comma-separated setting; unset means ``default`` (an empty value means an empty list)."""
    return [item.strip() for item in (default if value is None else value).split(",") if item.strip()]


STEP_UP_ACTS = ("resume", "limits", "merge")


def _step_up_acts(value: str | None) -> frozenset:
    acts = frozenset(_list(value, ""))
    unknown = acts - set(STEP_UP_ACTS)
    if unknown:
        raise ConfigError(f"MCC_REQUIRE_2FA_FOR lists {', '.join(sorted(unknown))}; known acts: {', '.join(STEP_UP_ACTS)}")
    return acts


_WINDOW_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_velocity(value: str | None):
    """``"5 per 10 minutes"`` -> (Decimal("5"), 600.0); ``"2.5 per hour"`` -> (2.5, 3600); unset -> None."""
    import re
    from decimal import Decimal

    if not value or not value.strip():
        return None
    match = re.fullmatch(r"\s*\$?(\d+(?:\.\d+)?)\s+per\s+(?:(\d+(?:\.\d+)?)\s+)?(second|minute|hour|day)s?\s*",
                         value, re.IGNORECASE)
    if match is None or Decimal(match.group(1)) <= 0 or (match.group(2) and float(match.group(2)) <= 0):
        raise ConfigError(f"MCC_VELOCITY_LIMIT must look like '5 per 10 minutes', not {value!r}")
    return Decimal(match.group(1)), float(match.group(2) or 1) * _WINDOW_UNITS[match.group(3).lower()]


def _price_pair(value: str):
    from decimal import Decimal

    given, received = (part.strip() for part in value.split(","))
    return Price(Decimal(given), Decimal(received))


def _channel_for(redis_url: str | None) -> str:
    from urllib.parse import urlsplit

    database = (urlsplit(redis_url).path.strip("/") or "0") if redis_url else "0"
    return f"mcc-socketio-{database}"


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service."""


ASYNC_MODES = ("gevent", "threading")


def gevent_patched() -> bool:
    import sys

    if "gevent" not in sys.modules:
        return False
    from gevent.monkey import is_module_patched

    return is_module_patched("socket")


def _async_mode(value: str | None) -> str:
    """The Socket.IO async mode follows the process: `gevent` under gunicorn's gevent worker (which
    patches the process before loading the app), else `threading`. An explicit value must name that
    same mode in a serving process; workers and `flask` commands only publish, so any valid value
    does for them."""
    if value and value not in ASYNC_MODES:
        raise ConfigError(f"MCC_SOCKETIO_ASYNC_MODE={value!r} is not supported: use one of {', '.join(ASYNC_MODES)}, "
                          "or leave it unset (it follows the gunicorn worker class).")
    patched = gevent_patched()
    mode = "gevent" if patched else "threading"
    serving = os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn")
    if value and value != mode and (patched or serving):
        worker_class = "gevent" if value == "gevent" else "gthread"
        raise ConfigError(f"MCC_SOCKETIO_ASYNC_MODE={value} needs gunicorn --worker-class {worker_class}, but this "
                          f"process runs {'gevent' if patched else 'without gevent'}: unset the variable "
                          "(the mode follows the worker class) or change the worker class.")
    return mode


def normalise_database_url(url: str) -> str:
    """Name the psycopg2 driver explicitly: SQLAlchemy 2.1 may pick another for a bare URL."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def _instance_dir(env: dict) -> Path:
    path = Path(env.get("MCC_INSTANCE_PATH") or PROJECT_ROOT / "instance")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite would create it 0644, and its
    journal files copy the database file's mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


MIN_SECRET_BYTES = 32


def _development_secret(instance: Path) -> str:
    key_file = instance / "secret_key"
    if not key_file.exists():
        # O_EXCL: two processes starting at once must not write two different keys.
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(64))
    return key_file.read_text().strip()


def load_config(env: dict | None = None) -> dict:
    """Build the Flask config mapping from environment variables."""
    env = dict(os.environ if env is None else env)
    production = env.get("MCC_ENV", "development") == "production"
    instance = _instance_dir(env)

    secret = env.get("MCC_SECRET_KEY")
    how = ("set it to a long random string (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(64))'`) "
           "shared by every web and worker process.")
    if not secret:
        if production:
            raise ConfigError(f"MCC_SECRET_KEY is not set. In production MCC refuses to start without it: {how}")
        secret = _development_secret(instance)
    elif production and len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"MCC_SECRET_KEY is {len(secret.encode())} bytes; in production MCC requires at least "
                          f"{MIN_SECRET_BYTES} (it signs every token and seals stored secrets): {how}")

    database_url = env.get("DATABASE_URL") or f"sqlite:///{instance / 'mcc.db'}"
    sqlite_file = _sqlite_file(database_url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        _private_file(sqlite_file)
    redis_url = env.get("REDIS_URL") or None
    log_format = env.get("MCC_LOG_FORMAT") or ("json" if production else "text")

    return {
        "MCC_ENV": "production" if production else "development",
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        # Web threads share this pool; a request waits at most MCC_DB_POOL_TIMEOUT for a connection
        # (then 503, not a hang).
        "SQLALCHEMY_ENGINE_OPTIONS": ({"pool_pre_ping": True} if database_url.startswith("sqlite") else
                                      {"pool_pre_ping": True, "pool_size": int(env.get("MCC_DB_POOL_SIZE", 10)),
                                       "max_overflow": int(env.get("MCC_DB_MAX_OVERFLOW", 20)),
                                       "pool_timeout": float(env.get("MCC_DB_POOL_TIMEOUT", 3)),
                                       "connect_args": {"connect_timeout": int(env.get("MCC_DB_CONNECT_TIMEOUT", 3))}}),
        "MCC_REDIS_MAX_CONNECTIONS": int(env.get("MCC_REDIS_MAX_CONNECTIONS", 200)),
        "MCC_REDIS_POOL_TIMEOUT": float(env.get("MCC_REDIS_POOL_TIMEOUT", 2)),
        "MCC_REDIS_TIMEOUT": float(env.get("MCC_REDIS_TIMEOUT", 2)),
        "REDIS_URL": redis_url,
        "MAX_CONTENT_LENGTH": int(env.get("MCC_MAX_BODY_BYTES", 1024 * 1024)),
        "MCC_TRUSTED_PROXIES": int(env.get("MCC_TRUSTED_PROXIES", 0)),
        "MCC_LOG_LEVEL": env.get("MCC_LOG_LEVEL", "INFO").upper(),
        "MCC_LOG_FORMAT": log_format,
        "MCC_SOCKETIO_ASYNC_MODE": _async_mode(env.get("MCC_SOCKETIO_ASYNC_MODE")),
        "MCC_SOCKET_CONCURRENCY": int(env.get("MCC_SOCKET_CONCURRENCY", 32)),
        "MCC_SOCKET_QUEUE_SECONDS": float(env.get("MCC_SOCKET_QUEUE_SECONDS", 2)),
        "MCC_SOCKET_AUTH_SECONDS": float(env.get("MCC_SOCKET_AUTH_SECONDS", 5)),
        "MCC_SOCKET_MAX_PER_IP": int(env.get("MCC_SOCKET_MAX_PER_IP", 50)),
        "MCC_SOCKETIO_CHANNEL": env.get("MCC_SOCKETIO_CHANNEL") or _channel_for(redis_url),
        "MCC_SOCKET_RATE_LIMIT": env.get("MCC_SOCKET_RATE_LIMIT", "100 per minute"),
        "MCC_TIMEZONE": env.get("MCC_TIMEZONE", "UTC"),
        "MCC_SOCKET_SWEEP_SECONDS": float(env.get("MCC_SOCKET_SWEEP_SECONDS", 15)),
        "MCC_CORS_ORIGINS": [o for o in env.get("MCC_CORS_ORIGINS", "").split(",") if o] or None,
        "MCC_LOGIN_RATE_LIMIT": env.get("MCC_LOGIN_RATE_LIMIT", "10 per minute"),
        "MCC_LOGIN_LOCKOUT": env.get("MCC_LOGIN_LOCKOUT", "5 per 15 minutes"),
        "MCC_LOGIN_IP_LOCKOUT": env.get("MCC_LOGIN_IP_LOCKOUT", "50 per 15 minutes"),
        "MCC_2FA_LOCKOUT": env.get("MCC_2FA_LOCKOUT", "5 per 15 minutes"),
        "MCC_2FA_TOKEN_EXPIRES": timedelta(seconds=int(env.get("MCC_2FA_TOKEN_SECONDS", 300))),
        "MCC_LLM_BASE_URL": env.get("MCC_LLM_BASE_URL", "https://openrouter.ai/api/v1"),
        "MCC_LLM_API_KEY": env.get("MCC_LLM_API_KEY") or None,
        "MCC_LLM_TIMEOUT": float(env.get("MCC_LLM_TIMEOUT", 120)),
        "MCC_LLM_MAX_RETRIES": int(env.get("MCC_LLM_MAX_RETRIES", 4)),
        "MCC_LLM_BACKOFF_BASE": float(env.get("MCC_LLM_BACKOFF_BASE", 0.5)),
        "MCC_LLM_BACKOFF_MAX": float(env.get("MCC_LLM_BACKOFF_MAX", 30)),
        "MCC_LLM_USAGE_ACCOUNTING": _flag(env.get("MCC_LLM_USAGE_ACCOUNTING"),
                                          "openrouter" in env.get("MCC_LLM_BASE_URL", "openrouter")),
        "MCC_LLM_PRICE_TABLE": load_prices(env.get("MCC_LLM_PRICES"), env.get("MCC_LLM_PRICES_FILE")),
        "MCC_BUDGET_UNKNOWN_PRICE": _price_pair(env.get("MCC_BUDGET_UNKNOWN_PRICE", "15,75")),
        "MCC_MAX_TASK_ATTEMPTS": int(env.get("MCC_MAX_TASK_ATTEMPTS", 3)),
        "MCC_AGENT_TASK_LIMIT": int(env.get("MCC_AGENT_TASK_LIMIT", 1)),
        "MCC_STAGE_REMINDERS": int(env.get("MCC_STAGE_REMINDERS", 2)),
        "MCC_CONTEXT_TOKENS": int(env.get("MCC_CONTEXT_TOKENS", 100_000)),
        "MCC_MAX_CHAIN": int(env.get("MCC_MAX_CHAIN", 8)),
        "MCC_MAX_TOOL_STEPS": int(env.get("MCC_MAX_TOOL_STEPS", 8)),
        "MCC_TURN_HEARTBEAT_SECONDS": float(env.get("MCC_TURN_HEARTBEAT_SECONDS", 10)),
        "MCC_TURN_MAX_ATTEMPTS": int(env.get("MCC_TURN_MAX_ATTEMPTS", 2)),
        "MCC_REAPER_SECONDS": float(env.get("MCC_REAPER_SECONDS", 15)),
        "MCC_MAX_CONCURRENT_CALLS": max(1, int(env.get("MCC_MAX_CONCURRENT_CALLS", 100))),
        "MCC_CANCEL_POLL_SECONDS": float(env.get("MCC_CANCEL_POLL_SECONDS", 0.1)),
        "MCC_VELOCITY_LIMIT": parse_velocity(env.get("MCC_VELOCITY_LIMIT")),
        "MCC_LOOP_REPEATS": int(env.get("MCC_LOOP_REPEATS", 3)),
        "MCC_REQUIRE_2FA_FOR": _step_up_acts(env.get("MCC_REQUIRE_2FA_FOR")),
        "MCC_AGENT_BUSY_RETRY_SECONDS": float(env.get("MCC_AGENT_BUSY_RETRY_SECONDS", 2)),
        "MCC_GITHUB_API_URL": (env.get("MCC_GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
        "MCC_GITHUB_TOKEN": env.get("MCC_GITHUB_TOKEN") or None,
        "MCC_GITHUB_APP_ID": env.get("MCC_GITHUB_APP_ID") or None,
        "MCC_GITHUB_APP_PRIVATE_KEY": env.get("MCC_GITHUB_APP_PRIVATE_KEY") or None,
        "MCC_GITHUB_WEBHOOK_SECRET": env.get("MCC_GITHUB_WEBHOOK_SECRET") or None,
        "MCC_GITHUB_WEBHOOK_RATE_LIMIT": env.get("MCC_GITHUB_WEBHOOK_RATE_LIMIT", "1000 per minute"),
        "MCC_GITHUB_WEBHOOK_CONCURRENCY": int(env.get("MCC_GITHUB_WEBHOOK_CONCURRENCY", 4)),
        "MCC_GITHUB_WEBHOOK_MAX_BYTES": int(env.get("MCC_GITHUB_WEBHOOK_MAX_BYTES", 25 * 1024 * 1024)),
        "MCC_GITHUB_WEBHOOK_READ_SECONDS": float(env.get("MCC_GITHUB_WEBHOOK_READ_SECONDS", 10)),
        "MCC_GITHUB_TIMEOUT": float(env.get("MCC_GITHUB_TIMEOUT", 30)),
        "MCC_GITHUB_MAX_RETRIES": int(env.get("MCC_GITHUB_MAX_RETRIES", 3)),
        "MCC_GITHUB_BACKOFF_BASE": float(env.get("MCC_GITHUB_BACKOFF_BASE", 1)),
        "MCC_GITHUB_RATE_LIMIT_WAIT": float(env.get("MCC_GITHUB_RATE_LIMIT_WAIT", 60)),
        "MCC_GITHUB_SYNC_INTERVAL": float(env.get("MCC_GITHUB_SYNC_INTERVAL", 3600)),
        "MCC_GITHUB_ALLOWED_REPOS": (_list(env["MCC_GITHUB_ALLOWED_REPOS"], "")
                                     if env.get("MCC_GITHUB_ALLOWED_REPOS") is not None else None),
        "MCC_PROTECTED_PATHS": _list(env.get("MCC_PROTECTED_PATHS"), DEFAULT_PROTECTED_PATHS),
        "MCC_TOKEN_PURGE_INTERVAL": float(env.get("MCC_TOKEN_PURGE_INTERVAL", 86400)),
        "MCC_ROLLUP_RECONCILE_INTERVAL": float(env.get("MCC_ROLLUP_RECONCILE_INTERVAL", 3600)),
        "MCC_METRICS_TOKEN": env.get("MCC_METRICS_TOKEN") or None,
        # Flask-Limiter: one shared bucket per client IP for the whole API.
        "RATELIMIT_APPLICATION": env.get("MCC_RATE_LIMIT", "100 per minute"),
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "RATELIMIT_KEY_PREFIX": "mcc-limits",
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_STRATEGY": "fixed-window",
        # Flask-JWT-Extended
        "JWT_SECRET_KEY": secret,
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=int(env.get("MCC_ACCESS_TOKEN_SECONDS", 900))),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(days=int(env.get("MCC_REFRESH_TOKEN_DAYS", 30))),
        "MCC_REFRESH_REUSE_GRACE": timedelta(seconds=max(0, int(env.get("MCC_REFRESH_REUSE_GRACE_SECONDS", 10)))),
        # flask-smorest / OpenAPI
        "API_TITLE": "MCC — Mission Control Center",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api/v1",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
        # Swagger UI's assets from the pinned flask-swagger-ui package (mcc/hardening.py), never a CDN.
        "OPENAPI_SWAGGER_UI_URL": "/api/v1/docs/assets/",
    }


README_TABLE_START = "<!-- variables:start (generated by `python -m mcc.config --write-readme`) -->"
README_TABLE_END = "<!-- variables:end -->"


def variables_table() -> str:
    rows = ["| name | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in VARIABLES]
    return "\n".join(rows)


def write_readme_table(readme: Path) -> None:
    text = readme.read_text()
    start, end = text.index(README_TABLE_START), text.index(README_TABLE_END)
    readme.write_text(text[:start + len(README_TABLE_START)] + "\n" + variables_table() + "\n" + text[end:])


if __name__ == "__main__":
    import sys

    if "--write-readme" in sys.argv:
        write_readme_table(PROJECT_ROOT / "README.md")
    else:
        print(variables_table())
