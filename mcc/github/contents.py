"""Files of the project's repository read through the contents API: the agents' rules files.

Read at the default branch, cached briefly (Redis when configured, else in-process) so a turn does
not wait on GitHub each time; a push to the default branch forgets the cache. Any failure means
"no rules" (None) and is cached for a shorter time so a broken setup does not slow every turn.
"""
from __future__ import annotations

import hashlib
import logging
from mcc.github.auth import SharedCache, client_for, is_configured
from mcc.github.paths import UnsafePath, contents_url
from mcc.redis_store import get_redis

log = logging.getLogger(__name__)

RULES_TTL = 300
RULES_MISS_TTL = 60
RULES_MAX_CHARS = 64_000
_MISSING = "\x00missing"


def _prefix(project_id) -> str:
    return f"mcc:github:rules:{project_id}:"


def read_rules(project, path: str | None) -> str | None:
    if not path or project is None or not is_configured(project):
        return None
    cache = SharedCache(get_redis())
    key = _prefix(project.id) + hashlib.sha256(path.encode()).hexdigest()[:24]
    cached = cache.get(key)
    if cached is not None:
        return None if cached == _MISSING else cached
    text = None
    try:
        url = contents_url(project.github_repo, path.lstrip("/"))
    except UnsafePath as exc:
        log.warning("rules file path %r of %s refused: %s", path, project.github_repo, exc)
        return None
    try:
        client = client_for(project, max_wait=2.0, max_retries=1)
        data = client.request("GET", url,
                              accept="application/vnd.github.raw+json").data
        if isinstance(data, str):  # a directory answers a JSON listing instead
            text = data[:RULES_MAX_CHARS]
    except Exception as exc:  # no rules rather than a failed turn
        log.warning("rules file %s of %s unavailable: %s", path, project.github_repo, exc)
    cache.set(key, text if text is not None else _MISSING, RULES_TTL if text is not None else RULES_MISS_TTL)
    return text


def forget_rules(project_id) -> None:
    SharedCache(get_redis()).delete_prefix(_prefix(project_id))
