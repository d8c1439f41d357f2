"""Cross-process coordination: locks, liveness marks, the emergency flag and the LLM call gate.

Redis when configured (shared by every web and worker process); in embedded mode the same calls
work within the one process.
"""
from __future__ import annotations

import json
import threading
import time
import uuid

from mcc.redis_store import get_redis

EMERGENCY_KEY = "mcc:emergency"
EMERGENCY_SYNCED_KEY = "mcc:emergency:synced"
INFLIGHT_KEY = "mcc:llm:inflight"

# Atomic with pause-all: a call either registers before the flag is set (and is "already calling
# the LLM"), or sees the flag and does not start. -1: the flag has not been loaded from the
# database since Redis started; the caller loads it and asks again.
_ACQUIRE_LUA = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
_PAUSE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], 1)
return redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
"""


class _LocalLock:
    def __init__(self, registry: dict, name: str):
        self.registry, self.name = registry, name

    def extend(self) -> None:
        pass

    def release(self) -> None:
        with _local_guard:
            self.registry.pop(self.name, None)


class _RedisLock:
    def __init__(self, lock):
        self.lock = lock

    def extend(self) -> None:
        self.lock.reacquire()

    def release(self) -> None:
        try:
            self.lock.release()
        except Exception:  # expired and taken by someone else: nothing of ours to release
            pass


_local_guard = threading.Lock()
_local_locks: dict[str, bool] = {}
_local_alive: dict[str, float] = {}
_local_state: dict = {"emergency": None, "inflight": {}}


def try_lock(name: str, ttl: float):
    """A non-blocking lock held for ``ttl`` seconds unless extended; None when taken."""
    redis = get_redis()
    if redis is None:
        with _local_guard:
            if name in _local_locks:
                return None
            _local_locks[name] = True
        return _LocalLock(_local_locks, name)
    lock = redis.lock(f"mcc:lock:{name}", timeout=ttl, blocking=False)
    return _RedisLock(lock) if lock.acquire(blocking=False) else None


def mark_alive(key: str, ttl: float) -> None:
    redis = get_redis()
    if redis is None:
        _local_alive[key] = time.time() + ttl
    else:
        redis.set(f"mcc:alive:{key}", 1, px=int(ttl * 1000))


def is_alive(key: str) -> bool:
    redis = get_redis()
    if redis is None:
        return _local_alive.get(key, 0) > time.time()
    return bool(redis.exists(f"mcc:alive:{key}"))


def clear_alive(key: str) -> None:
    redis = get_redis()
    if redis is None:
        _local_alive.pop(key, None)
    else:
        redis.delete(f"mcc:alive:{key}")


# --- the emergency flag and the LLM call gate ---------------------------------------------------

def set_emergency_flag(state: dict | None, settle_seconds: float = 0.05) -> int:
    """Set (dict) or clear (None) the flag; returns how many LLM calls were already under way.

    After setting it, wait until every call registered before the flag has had ``settle_seconds``
    to reach the gateway, so none arrives after pause-all has returned.
    """
    redis = get_redis()
    if redis is None:
        with _local_guard:
            _local_state["emergency"] = state
            inflight = dict(_local_state["inflight"])
    elif state is None:
        redis.delete(EMERGENCY_KEY)
        redis.set(EMERGENCY_SYNCED_KEY, 1)
        return 0
    else:
        stale_before_ms = int((time.time() - 3600) * 1000)  # calls of workers that died long ago
        raw = redis.eval(_PAUSE_LUA, 3, EMERGENCY_KEY, INFLIGHT_KEY, EMERGENCY_SYNCED_KEY, json.dumps(state),
                         stale_before_ms)
        inflight = {raw[i]: float(raw[i + 1]) / 1000 for i in range(0, len(raw), 2)}
    if state is not None and inflight:
        wait = min(settle_seconds, max(0.0, max(inflight.values()) + settle_seconds - time.time()))
        time.sleep(wait)
    return len(inflight)


def emergency_flag(load_from_db) -> dict | None:
    redis = get_redis()
    if redis is None:
        return load_from_db()
    raw = redis.get(EMERGENCY_KEY)
    if raw is None and not redis.exists(EMERGENCY_SYNCED_KEY):
        return _resync(redis, load_from_db)
    return json.loads(raw) if raw else None


def _resync(redis, load_from_db) -> dict | None:
    """Redis lost the flag (restart, flush): the database is the source of truth."""
    state = load_from_db()
    pipe = redis.pipeline()
    if state:
        pipe.set(EMERGENCY_KEY, json.dumps(state))
    else:
        pipe.delete(EMERGENCY_KEY)
    pipe.set(EMERGENCY_SYNCED_KEY, 1)
    pipe.execute()
    return state


def acquire_llm_call(load_from_db) -> str | None:
    """Register an LLM call about to start; None when an emergency pause forbids it."""
    call_id = uuid.uuid4().hex
    redis = get_redis()
    if redis is None:
        with _local_guard:
            if _local_state["emergency"] is None:
                _local_state["emergency"] = load_from_db() or {}
            if _local_state["emergency"]:
                return None
            _local_state["inflight"][call_id] = time.time()
        return call_id
    for _ in range(2):
        result = redis.eval(_ACQUIRE_LUA, 3, EMERGENCY_KEY, INFLIGHT_KEY, EMERGENCY_SYNCED_KEY, call_id,
                            int(time.time() * 1000))
        if result == -1:
            _resync(redis, load_from_db)
            continue
        return call_id if result == 1 else None
    return None


def release_llm_call(call_id: str) -> None:
    redis = get_redis()
    if redis is None:
        with _local_guard:
            _local_state["inflight"].pop(call_id, None)
    else:
        redis.zrem(INFLIGHT_KEY, call_id)
