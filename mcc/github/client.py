"""A small GitHub REST client on ``requests``.

- ``Link`` pagination (``pages``/``paginate``), only ever following links on the API's own host;
- conditional requests: pass the ``etag`` of an earlier answer, a 304 comes back as ``not_modified``;
- primary and secondary rate limits (``x-ratelimit-remaining``/``x-ratelimit-reset``, ``retry-after``):
  waits and retries when the wait is at most ``max_wait`` seconds, otherwise fails at once;
- 5xx answers and connection failures are retried with exponential backoff and jitter;
- a 401 with a cached installation token drops the token and retries once with a fresh one;
- every failure is raised as ``GitHubApiError`` (502 GITHUB_API_ERROR) carrying GitHub's message.
"""
from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import requests

from mcc.errors import GitHubApiError

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "MCC-Mission-Control-Center"
MAX_RATE_LIMIT_WAITS = 3
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0  # GitHub: "wait at least one minute" when it names no time
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="([^"]+)"')


def parse_link(header: str | None) -> dict[str, str]:
    """``<url>; rel="next", <url>; rel="last"`` -> {"next": url, "last": url}."""
    return {rel: url for url, rel in _LINK.findall(header or "")}


@dataclass
class GitHubResponse:
    status: int
    data: Any
    headers: Mapping[str, str]

    @property
    def etag(self) -> str | None:
        return self.headers.get("ETag")

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def next_url(self) -> str | None:
        return parse_link(self.headers.get("Link")).get("next")


def _github_message(response: requests.Response) -> tuple[str, dict]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        details = {k: body[k] for k in ("documentation_url", "errors", "status") if k in body}
        return str(body.get("message") or response.reason or "error"), details
    text = (response.text or "").strip()
    return (text[:300] or response.reason or "error"), {}


def _seconds_from_retry_after(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class GitHubClient:
    def __init__(self, base_url: str, auth=None, *, timeout: float = 30.0, max_retries: int = 3,
                 backoff_base: float = 1.0, backoff_max: float = 30.0, max_wait: float = 60.0,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_wait = max_wait
        self.session = session or requests.Session()
        base = urlsplit(self.base_url)
        self._origin = (base.scheme, base.netloc)

    # --- the one request loop ---------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            parts = urlsplit(path_or_url)
            if (parts.scheme, parts.netloc) != self._origin:
                raise GitHubApiError(f"GitHub sent a link off the API host: {parts.netloc}",
                                     {"url": path_or_url})
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def _backoff(self, attempt: int, shown: str, why) -> bool:
        """Sleep before retry ``attempt + 1`` (exponential, with jitter); False when none is left."""
        if attempt >= self.max_retries:
            return False
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt)) * (0.5 + random.random() / 2)
        log.warning("GitHub %s: %s; retry %s in %.2fs", shown, why, attempt + 1, delay)
        time.sleep(delay)
        return True

    def _rate_limit_wait(self, response: requests.Response, message: str) -> tuple[float, str] | None:
        """Seconds to wait and which limit, when ``response`` is a rate-limit refusal."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        retry_after = headers.get("Retry-After")
        if retry_after is not None:
            seconds = _seconds_from_retry_after(retry_after)
            if seconds is not None:
                return seconds, "secondary"
        if headers.get("X-RateLimit-Remaining") == "0" and headers.get("X-RateLimit-Reset"):
            try:
                return max(0.0, float(headers["X-RateLimit-Reset"]) - time.time()) + 1.0, "primary"
            except ValueError:
                pass
        lowered = message.lower()
        if response.status_code == 429 or "secondary rate limit" in lowered or "abuse" in lowered:
            return SECONDARY_LIMIT_DEFAULT_WAIT, "secondary"
        return None

    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                etag: str | None = None, accept: str | None = None,
                authorization: str | None = None) -> GitHubResponse:
        """One API call with retries; ``authorization`` overrides the client's auth (App JWT calls)."""
        url = self._url(path)
        shown = f"{method} {urlsplit(url).path}"
        attempt = rate_waits = 0
        refreshed = False
        while True:
            headers = {"Accept": accept or "application/vnd.github+json", "User-Agent": USER_AGENT,
                       "X-GitHub-Api-Version": API_VERSION}
            auth_header = authorization or (self.auth.authorization(self) if self.auth is not None else None)
            if auth_header:
                headers["Authorization"] = auth_header
            if etag:
                headers["If-None-Match"] = etag
            try:
                response = self.session.request(method, url, params=params, json=json, headers=headers,
                                                timeout=self.timeout)
            except requests.RequestException as exc:
                if self._backoff(attempt, shown, exc):
                    attempt += 1
                    continue
                raise GitHubApiError(f"GitHub could not be reached ({shown}): {type(exc).__name__}: {exc}",
                                     {"method": method, "path": urlsplit(url).path}) from exc
            status = response.status_code
            if status == 304:
                return GitHubResponse(304, None, response.headers)
            if 200 <= status < 300:
                raw = bool(accept and ".raw" in accept)  # file contents, whatever the Content-Type says
                return GitHubResponse(status, response.text if raw else self._body(response), response.headers)
            message, extra = _github_message(response)
            if (status == 401 and not refreshed and authorization is None and self.auth is not None
                    and getattr(self.auth, "refreshable", False)):
                refreshed = True
                self.auth.invalidate(self)
                continue
            wait = self._rate_limit_wait(response, message)
            if wait is not None:
                seconds, which = wait
                if seconds <= self.max_wait and rate_waits < MAX_RATE_LIMIT_WAITS:
                    rate_waits += 1
                    log.warning("GitHub %s rate limit on %s; waiting %.1fs", which, shown, seconds)
                    time.sleep(seconds)
                    continue
                raise GitHubApiError(
                    f"GitHub {which} rate limit exceeded ({shown}): {message}; retry in {int(seconds) + 1} s",
                    {"github_status": status, "github_message": message, "rate_limit": which,
                     "retry_after": int(seconds) + 1, "method": method, "path": urlsplit(url).path, **extra},
                    github_status=status)
            if status >= 500 and self._backoff(attempt, shown, f"answered {status}"):
                attempt += 1
                continue
            raise GitHubApiError(f"GitHub answered {status} to {shown}: {message}",
                                 {"github_status": status, "github_message": message, "method": method,
                                  "path": urlsplit(url).path, **extra},
                                 github_status=status)

    @staticmethod
    def _body(response: requests.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        if "json" in response.headers.get("Content-Type", ""):
            try:
                return response.json()
            except ValueError as exc:
                raise GitHubApiError(f"GitHub sent JSON that does not parse: {exc}") from exc
        return response.text

    # --- conveniences -------------------------------------------------------------------------
    def get(self, path: str, **kwargs) -> Any:
        return self.request("GET", path, **kwargs).data

    def post(self, path: str, json: Any = None, **kwargs) -> Any:
        return self.request("POST", path, json=json, **kwargs).data

    def put(self, path: str, json: Any = None, **kwargs) -> Any:
        return self.request("PUT", path, json=json, **kwargs).data

    def pages(self, path: str, params: dict | None = None, *, etag: str | None = None,
              max_pages: int = 1000) -> Iterator[GitHubResponse]:
        """Every page of a listing, following ``Link: rel="next"``. With ``etag``, the first page is
        conditional: a 304 is yielded alone (nothing changed since that ETag)."""
        response = self.request("GET", path, params=params, etag=etag)
        yield response
        if response.not_modified:
            return
        url, count = response.next_url, 1
        while url:
            if count >= max_pages:
                raise GitHubApiError(f"GitHub listing {path} has more than {max_pages} pages")
            response = self.request("GET", url)
            yield response
            url, count = response.next_url, count + 1

    def paginate(self, path: str, params: dict | None = None, *, items_key: str | None = None) -> Iterator[Any]:
        """Every item of a listing; ``items_key`` for wrapped lists ({"total_count", "check_runs": [...]})."""
        for response in self.pages(path, params):
            data = response.data or ([] if items_key is None else {})
            yield from (data.get(items_key) or []) if items_key else data
