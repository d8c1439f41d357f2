"""Cross-process coordination: locks, liveness marks, the emergency flag and the LLM call gate.

Redis when configured (shared by every web and worker process); in embedded mode the same calls
work within the one process.
"""
from __future__ import annotations

import json
import threading
import time
import uuid

from redis.exceptions import RedisError

from mcc.redis_store import get_redis

EMERGENCY_KEY = "mcc:emergency"
EMERGENCY_SYNCED_KEY = "mcc:emergency:synced"
INFLIGHT_KEY = "mcc:llm:inflight"

# Atomic with pause-all: a call either registers before the flag is set (and is "already calling
# the LLM"), or sees the flag and does not start. -1: the flag has not been loaded from the
# database since Redis started; the caller loads it and asks again.
#
# Budget counters (KEYS[4..]) are hashes {spent, reserved} in micro-dollars; ARGV[3..] hold
# (limit, amount) pairs. -2: counter i is missing (rebuild it from the ledger and ask again);
# -3: reserving would pass limit i, nothing is reserved.
_ACQUIRE_LUA = """
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local n = #KEYS - 3
for i = 1, n do
  if redis.call('EXISTS', KEYS[3 + i]) == 0 then return {-2, i} end
end
for i = 1, n do
  local spent = tonumber(redis.call('HGET', KEYS[3 + i], 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[3 + i], 'reserved') or '0')
  local limit = tonumber(ARGV[1 + 2 * i])
  local amount = tonumber(ARGV[2 + 2 * i])
  if spent + reserved + amount > limit then return {-3, i, spent + reserved} end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[3 + i], 'reserved', ARGV[2 + 2 * i])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {1}
"""
# KEYS: n release keys, then the spend keys; ARGV[1] n, ARGV[2] reserved amount, ARGV[3] cost.
# Returns the spent total of each spend key, -1 where the counter is missing.
_SETTLE_LUA = """
local n = tonumber(ARGV[1])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local left = tonumber(redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[2])))
    if left < 0 then redis.call('HSET', KEYS[i], 'reserved', 0) end
  end
end
local out = {}
for i = n + 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[#out + 1] = redis.call('HINCRBY', KEYS[i], 'spent', ARGV[3])
  else
    out[#out + 1] = -1
  end
end
return out
"""
COUNTER_TTL = 40 * 24 * 3600  # longer than any period
# Sets the flag and tells every call in flight to stop (a cancel mark per call, so a resume that
# follows at once does not let them run on). Returns {marked, call, ms, call, ms...}.
_PAUSE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], 1)
local calls = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local marked = 0
for i = 1, #calls, 2 do
  if redis.call('SET', ARGV[4] .. calls[i], ARGV[3], 'NX', 'EX', ARGV[5]) then marked = marked + 1 end
end
table.insert(calls, 1, marked)
return calls
"""
CANCEL_PREFIX = "mcc:cancel:"
CANCEL_TTL = 24 * 3600


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
_local_state: dict = {"emergency": None, "inflight": {}, "cancel": {}}


def try_lock(name: str, ttl: float):
    """A non-blocking lock held for ``ttl`` seconds unless extended; None when taken."""
    redis = get_redis()
    if redis is None:
        with _local_guard:
            if name in _local_locks:
                return None
            _local_locks[name] = True
        return _LocalLock(_local_locks, name)
    # thread_local=False: the heartbeat thread extends a lock another thread took.
    lock = redis.lock(f"mcc:lock:{name}", timeout=ttl, blocking=False, thread_local=False)
    return _RedisLock(lock) if lock.acquire(blocking=False) else None


def is_locked(name: str) -> bool:
    redis = get_redis()
    if redis is None:
        return name in _local_locks
    return bool(redis.exists(f"mcc:lock:{name}"))


def once_per(key: str, ttl: float) -> bool:
    """True for the first caller in ``ttl`` seconds, across every process."""
    redis = get_redis()
    if redis is None:
        with _local_guard:
            if _local_alive.get(f"once:{key}", 0) > time.time():
                return False
            _local_alive[f"once:{key}"] = time.time() + ttl
            return True
    return bool(redis.set(f"mcc:once:{key}", 1, nx=True, px=int(ttl * 1000)))


def mark_alive(key: str, ttl: float) -> None:
    """A liveness beat: alive for ``ttl`` seconds; the beat's time is kept (``beat_age``)."""
    redis = get_redis()
    if redis is None:
        _local_alive[key] = time.time() + ttl
        _local_alive[f"beat:{key}"] = time.time()
    else:
        redis.set(f"mcc:alive:{key}", repr(time.time()), px=int(ttl * 1000))


def beat_age(key: str) -> float | None:
    """Seconds since the last beat of a live key; None when it is not alive."""
    redis = get_redis()
    if redis is None:
        beat = _local_alive.get(f"beat:{key}") if is_alive(key) else None
    else:
        raw = redis.get(f"mcc:alive:{key}")
        try:
            beat = float(raw) if raw is not None else None
        except ValueError:  # a beat written before beats carried their time
            beat = None
    return None if beat is None else max(0.0, time.time() - beat)


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

def set_emergency_flag(state: dict | None, settle_seconds: float = 0.05,
                       cancel_reason: str = "stop|all agents were paused") -> tuple[int, int]:
    """Set (dict) or clear (None) the flag; returns (LLM calls under way, calls told to stop).

    Every call under way is marked cancelled (``cancel_mark``): its worker closes the stream
    within a poll. After setting the flag, wait until every call registered before it has had
    ``settle_seconds`` to reach the gateway, so none arrives after pause-all has returned.
    """
    redis = get_redis()
    if redis is None:
        with _local_guard:
            _local_state["emergency"] = state
            inflight = dict(_local_state["inflight"])
            marked = 0
            if state is not None:
                for call_id in inflight:
                    marked += _local_state["cancel"].setdefault(f"call:{call_id}", cancel_reason) == cancel_reason
    elif state is None:
        redis.delete(EMERGENCY_KEY)
        redis.set(EMERGENCY_SYNCED_KEY, 1)
        return 0, 0
    else:
        stale_before_ms = int((time.time() - 3600) * 1000)  # calls of workers that died long ago
        raw = redis.eval(_PAUSE_LUA, 3, EMERGENCY_KEY, INFLIGHT_KEY, EMERGENCY_SYNCED_KEY, json.dumps(state),
                         stale_before_ms, cancel_reason, f"{CANCEL_PREFIX}call:", CANCEL_TTL)
        marked, raw = int(raw[0]), raw[1:]
        inflight = {raw[i]: float(raw[i + 1]) / 1000 for i in range(0, len(raw), 2)}
    if state is not None and inflight:
        wait = min(settle_seconds, max(0.0, max(inflight.values()) + settle_seconds - time.time()))
        time.sleep(wait)
    return len(inflight), marked


# --- cancel marks: a call or a turn told to stop ---------------------------------------------------

def cancel_mark(names: list[str], reason: str) -> int:
    """Mark ``call:<id>`` / ``turn:<id>`` cancelled (first reason wins); returns how many were new."""
    if not names:
        return 0
    redis = get_redis()
    if redis is None:
        with _local_guard:
            before = len(_local_state["cancel"])
            for name in names:
                _local_state["cancel"].setdefault(name, reason)
            return len(_local_state["cancel"]) - before
    pipe = redis.pipeline()
    for name in names:
        pipe.set(f"{CANCEL_PREFIX}{name}", reason, nx=True, ex=CANCEL_TTL)
    return sum(1 for done in pipe.execute() if done)


def cancel_marks(names: list[str]) -> tuple[dict | None, str | None]:
    """(the emergency flag, the first cancel reason among ``names``): one round trip, for polling."""
    redis = get_redis()
    if redis is None:
        with _local_guard:
            reason = next((_local_state["cancel"][n] for n in names if n in _local_state["cancel"]), None)
            return _local_state["emergency"] or None, reason
    values = redis.mget([EMERGENCY_KEY] + [f"{CANCEL_PREFIX}{name}" for name in names])
    reason = next((v.decode() if isinstance(v, bytes) else v for v in values[1:] if v), None)
    return (json.loads(values[0]) if values[0] else None), reason


def clear_cancel_marks(names: list[str]) -> None:
    redis = get_redis()
    if redis is None:
        with _local_guard:
            for name in names:
                _local_state["cancel"].pop(name, None)
    elif names:
        redis.delete(*[f"{CANCEL_PREFIX}{name}" for name in names])


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


class BudgetRefused(Exception):
    """Reserving the call's worst case would pass the block limit at ``index``."""

    def __init__(self, index: int, used_micro: int):
        super().__init__(index)
        self.index, self.used_micro = index, used_micro


class GateUnavailable(Exception):
    """The budget store cannot be reached: calls under a block limit are refused."""


def _ensure_counter(redis, key: str, rebuild) -> None:
    # HSETNX: two processes rebuilding at once agree on one value.
    if redis.hsetnx(key, "spent", rebuild()):
        redis.hsetnx(key, "reserved", 0)
        redis.expire(key, COUNTER_TTL)


def acquire_llm_call(load_from_db, budget_checks=(), rebuild_counter=None) -> str | None:
    """Register an LLM call about to start, reserving its worst case against block limits.

    ``budget_checks``: (counter key, limit micro-USD, amount micro-USD) per block limit.
    None when an emergency pause forbids the call; BudgetRefused when a limit would be passed.
    """
    call_id = uuid.uuid4().hex
    redis = get_redis()
    if redis is None:
        with _local_guard:
            if _local_state["emergency"] is None:
                _local_state["emergency"] = load_from_db() or {}
            if _local_state["emergency"]:
                return None
            reserved = _local_state.setdefault("reserved", {})
            for index, (key, limit, amount) in enumerate(budget_checks):
                used = rebuild_counter(index) + reserved.get(key, 0)
                if used + amount > limit:
                    raise BudgetRefused(index, used)
            for key, _limit, amount in budget_checks:
                reserved[key] = reserved.get(key, 0) + amount
            _local_state["inflight"][call_id] = time.time()
        return call_id
    keys = [key for key, _, _ in budget_checks]
    args = [call_id, int(time.time() * 1000)]
    for _key, limit, amount in budget_checks:
        args += [limit, amount]
    try:
        for _ in range(len(keys) + 2):
            result = redis.eval(_ACQUIRE_LUA, 3 + len(keys), EMERGENCY_KEY, INFLIGHT_KEY, EMERGENCY_SYNCED_KEY,
                                *keys, *args)
            if result[0] == -1:
                _resync(redis, load_from_db)
            elif result[0] == -2:
                _ensure_counter(redis, keys[result[1] - 1], lambda: rebuild_counter(result[1] - 1))
            elif result[0] == -3:
                raise BudgetRefused(result[1] - 1, int(result[2]))
            else:
                return call_id if result[0] == 1 else None
    except RedisError as exc:
        if budget_checks:
            raise GateUnavailable(str(exc)) from exc
        if load_from_db():  # no block limit involved: the database still knows about a pause
            return None
        return call_id
    raise GateUnavailable("budget counters could not be rebuilt")


def settle_budget(release_keys: list[str], reserved_micro: int, spend_keys: list[str], cost_micro: int,
                  rebuild_counter) -> list[int]:
    """Release a reservation and add a call's cost; returns each spend counter's new total."""
    redis = get_redis()
    if redis is None:
        with _local_guard:
            reserved = _local_state.setdefault("reserved", {})
            for key in release_keys:
                reserved[key] = max(0, reserved.get(key, 0) - reserved_micro)
        # Embedded: the rollup (already committed) is the counter.
        return [rebuild_counter(i) for i in range(len(spend_keys))]
    totals = redis.eval(_SETTLE_LUA, len(release_keys) + len(spend_keys), *release_keys, *spend_keys,
                        len(release_keys), reserved_micro, cost_micro)
    result = []
    for index, total in enumerate(totals):
        if int(total) == -1:  # lost (flush, restart): the committed rollup already holds this call
            _ensure_counter(redis, spend_keys[index], lambda: rebuild_counter(index))
            total = redis.hget(spend_keys[index], "spent")
        result.append(int(total))
    return result


def budget_used(key: str, rebuild) -> int:
    """Spent plus reserved on one counter, in micro-dollars."""
    redis = get_redis()
    if redis is None:
        return rebuild() + _local_state.get("reserved", {}).get(key, 0)
    if not redis.exists(key):
        _ensure_counter(redis, key, rebuild)
    spent, reserved = redis.hmget(key, "spent", "reserved")
    return int(spent or 0) + int(reserved or 0)


def release_llm_call(call_id: str) -> None:
    redis = get_redis()
    if redis is None:
        with _local_guard:
            _local_state["inflight"].pop(call_id, None)
    else:
        redis.zrem(INFLIGHT_KEY, call_id)


def calls_in_flight() -> int:
    """LLM calls registered through the gate and not yet released (as pause-all counts them)."""
    redis = get_redis()
    if redis is None:
        with _local_guard:
            return len(_local_state["inflight"])
    return redis.zcount(INFLIGHT_KEY, int((time.time() - 3600) * 1000), "+inf")
