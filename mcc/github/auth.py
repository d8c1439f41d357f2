"""Who MCC is on GitHub, per project.

- a GitHub App (``github_app_id`` of the project, else ``MCC_GITHUB_APP_ID``, with
  ``MCC_GITHUB_APP_PRIVATE_KEY``): an RS256 app JWT (``iss`` = app id, 9 minutes) is exchanged at
  ``POST /app/installations/{id}/access_tokens`` for an installation token, cached (Redis when
  configured, else in-process) until 5 minutes before it expires. A project without an installation
  id has it looked up (``GET /repos/{owner}/{repo}/installation``) unless a plain token is configured;
- or the plain ``MCC_GITHUB_TOKEN``.
"""
from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime
from pathlib import Path

import jwt
from flask import current_app, has_request_context

from mcc.errors import GitHubApiError, GitHubNotConfigured
from mcc.github.client import GitHubClient
from mcc.redis_store import get_redis

TOKEN_REFRESH_MARGIN = 300  # seconds before expiry when a cached installation token is replaced
INSTALLATION_ID_TTL = 3600
WEB_MAX_RATE_LIMIT_WAIT = 5.0  # a web request never sleeps long on GitHub's rate limit


class SharedCache:
    """Short-lived secrets shared by every process through Redis, or kept in this process."""

    _local: dict[str, tuple[str, float]] = {}
    _lock = threading.Lock()

    def __init__(self, redis=None):
        self.redis = redis

    def get(self, key: str) -> str | None:
        if self.redis is not None:
            value = self.redis.get(key)
            return value.decode() if value is not None else None
        with self._lock:
            value, expires = self._local.get(key, (None, 0.0))
            return value if expires > time.monotonic() else None

    def set(self, key: str, value: str, ttl: float) -> None:
        if ttl < 1:
            return
        if self.redis is not None:
            self.redis.set(key, value, ex=int(ttl))
            return
        with self._lock:
            self._local[key] = (value, time.monotonic() + ttl)

    def delete(self, key: str) -> None:
        if self.redis is not None:
            self.redis.delete(key)
            return
        with self._lock:
            self._local.pop(key, None)

    def delete_prefix(self, prefix: str) -> None:
        if self.redis is not None:
            keys = list(self.redis.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                self.redis.delete(*keys)
            return
        with self._lock:
            for key in [k for k in self._local if k.startswith(prefix)]:
                del self._local[key]


class TokenAuth:
    refreshable = False

    def __init__(self, token: str):
        self.token = token

    def authorization(self, client: GitHubClient) -> str:
        return f"Bearer {self.token}"

    def invalidate(self, client: GitHubClient) -> None:
        pass


def load_private_key(value: str) -> str:
    """PEM text (literal ``\\n`` escapes allowed, as one-line environments need) or a file path."""
    text = value.strip()
    if "-----BEGIN" not in text:
        try:
            text = Path(text).expanduser().read_text()
        except OSError as exc:
            raise GitHubNotConfigured("MCC_GITHUB_APP_PRIVATE_KEY is neither PEM text nor a readable file.",
                                      {"error": f"{type(exc).__name__}: {exc.strerror or exc}"}) from exc
    return text.replace("\\n", "\n").strip() + "\n"


class AppInstallationAuth:
    refreshable = True

    def __init__(self, app_id: str, private_key: str, installation_id: str | None, repo: str,
                 cache: SharedCache):
        self.app_id = str(app_id)
        self.private_key = private_key
        self.installation_id = installation_id
        self.repo = repo
        self.cache = cache

    def app_jwt(self) -> str:
        now = int(time.time())
        try:
            # iat 60 s in the past against clock drift; GitHub refuses exp more than 10 minutes ahead.
            return jwt.encode({"iat": now - 60, "exp": now + 540, "iss": self.app_id}, self.private_key,
                              algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise GitHubNotConfigured("MCC_GITHUB_APP_PRIVATE_KEY is not a usable RSA private key.",
                                      {"error": str(exc)}) from exc

    def _key(self, client: GitHubClient, what: str) -> str:
        host = hashlib.sha256(client.base_url.encode()).hexdigest()[:12]
        return f"mcc:github:{what}:{host}:{self.app_id}:{self.installation_id or self.repo.lower()}"

    def _installation(self, client: GitHubClient) -> str:
        if self.installation_id:
            return str(self.installation_id)
        key = self._key(client, "installation")
        cached = self.cache.get(key)
        if cached:
            return cached
        data = client.request("GET", f"/repos/{self.repo}/installation",
                              authorization=f"Bearer {self.app_jwt()}").data
        installation = str(data["id"])
        self.cache.set(key, installation, INSTALLATION_ID_TTL)
        return installation

    def authorization(self, client: GitHubClient) -> str:
        key = self._key(client, "token")
        token = self.cache.get(key)
        if token is None:
            token = self._exchange(client, key)
        return f"Bearer {token}"

    def _exchange(self, client: GitHubClient, key: str) -> str:
        installation = self._installation(client)
        data = client.request("POST", f"/app/installations/{installation}/access_tokens",
                              authorization=f"Bearer {self.app_jwt()}").data
        try:
            token = data["token"]
            expires_at = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GitHubApiError("GitHub's installation token answer has no token/expires_at.") from exc
        self.cache.set(key, token, expires_at.timestamp() - time.time() - TOKEN_REFRESH_MARGIN)
        return token

    def invalidate(self, client: GitHubClient) -> None:
        self.cache.delete(self._key(client, "token"))


def auth_mode(project) -> str | None:
    """``app``, ``token`` or None (GitHub is not configured for this project)."""
    config = current_app.config
    app_id = project.github_app_id or config["MCC_GITHUB_APP_ID"]
    if app_id and config["MCC_GITHUB_APP_PRIVATE_KEY"] and (
            project.github_installation_id or not config["MCC_GITHUB_TOKEN"]):
        return "app"
    if config["MCC_GITHUB_TOKEN"]:
        return "token"
    return None


def is_configured(project) -> bool:
    return auth_mode(project) is not None


def require_configured(project) -> str:
    mode = auth_mode(project)
    if mode is None:
        raise GitHubNotConfigured(
            "GitHub access is not configured: set MCC_GITHUB_TOKEN, or MCC_GITHUB_APP_PRIVATE_KEY with an app id "
            "(MCC_GITHUB_APP_ID or the project's github_app_id).", {"project_id": str(project.id)})
    return mode


def client_for(project, *, max_wait: float | None = None, max_retries: int | None = None) -> GitHubClient:
    """A client acting for ``project``; GitHubNotConfigured (409) when MCC has no way in."""
    config = current_app.config
    mode = require_configured(project)
    if mode == "app":
        auth = AppInstallationAuth(project.github_app_id or config["MCC_GITHUB_APP_ID"],
                                   load_private_key(config["MCC_GITHUB_APP_PRIVATE_KEY"]),
                                   project.github_installation_id, project.github_repo, SharedCache(get_redis()))
    else:
        auth = TokenAuth(config["MCC_GITHUB_TOKEN"])
    wait = config["MCC_GITHUB_RATE_LIMIT_WAIT"] if max_wait is None else max_wait
    if has_request_context():
        wait = min(wait, WEB_MAX_RATE_LIMIT_WAIT)
    return GitHubClient(config["MCC_GITHUB_API_URL"], auth, timeout=config["MCC_GITHUB_TIMEOUT"],
                        max_retries=config["MCC_GITHUB_MAX_RETRIES"] if max_retries is None else max_retries,
                        backoff_base=config["MCC_GITHUB_BACKOFF_BASE"], max_wait=wait)


def repo_path(project) -> str:
    return f"/repos/{project.github_repo}"
