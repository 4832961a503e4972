"""Rate limits and concurrency caps kept in Redis, shared by every API process.

Requests per second use GCRA (a token bucket stored as one timestamp) in a Lua script, so
a check is one atomic round trip and many processes never over-admit. Concurrent jobs use
a sorted set whose members expire, so a worker that crashes without releasing its slot
only holds it until the TTL. Redis trouble never takes billing down: by default requests
pass and the failure is counted (fail open); operators can choose fail closed (503).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass

from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from starlette.responses import Response

from app.core.errors import RateLimited, ServiceUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "swapmeter:ratelimit:"
SLOTS_PREFIX = "swapmeter:slots:"
DEFAULT_REDIS_TIMEOUT_S = 0.25
# What a client is told to wait when we answer 503 because Redis is down.
UNAVAILABLE_RETRY_AFTER_S = 1

REDIS_ERRORS = Counter(
    "swapmeter_ratelimit_redis_errors_total",
    "Rate-limit and job-slot operations that failed because Redis did not answer.",
    ["operation"],
)
FAIL_OPEN = Counter(
    "swapmeter_ratelimit_fail_open_total",
    "Requests let through unchecked, and job slots granted uncapped, because Redis did "
    "not answer (fail open).",
    ["operation"],
)
REDIS_UP = Gauge(
    "swapmeter_redis_up",
    "1 when Redis last answered (a rate-limit or job-slot call, /readyz or a scrape of "
    "/metrics), 0 when it did not.",
    multiprocess_mode="mostrecent",
)
REDIS_UP.set(1)
# Exported at 0 from the start, so that dashboards and alerts see a series, not "no data".
for _operation in ("check_rate", "acquire_slot", "renew_slot", "release_slot", "ping"):
    REDIS_ERRORS.labels(_operation)
for _operation in ("check_rate", "acquire_slot"):
    FAIL_OPEN.labels(_operation)

# GCRA: the key holds the theoretical arrival time (TAT) in microseconds of Redis' clock,
# so API hosts with skewed clocks still agree. A request is admitted when the TAT it would
# push does not run further ahead of now than the burst allows.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, allow_at - now, 0, tat - now}
end
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, 0, math.floor((now - allow_at) / interval), new_tat - now}
"""

# Slots: members are job attempts (``slot_holder``) scored by their expiry (ms of Redis'
# clock). Expired members are dropped before counting. ARGV[4] == 'renew' only extends a
# slot already held; ARGV[5], when not empty, is a holder whose slot this one takes over.
_SLOT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local expires = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[1], ARGV[5]) end
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held then
  if ARGV[4] == 'renew' then return 0 end
  if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
end
redis.call('ZADD', KEYS[1], string.format('%.0f', expires), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"""


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one rate check, with what the RateLimit headers need.

    ``degraded`` is true when Redis could not be asked and the request was let through
    (fail open); such a decision carries no real quota figures.
    """

    allowed: bool
    retry_after_s: float
    remaining: int
    reset_s: float
    limit: int
    degraded: bool = False


def rate_limit_redis(url: str, timeout_s: float = DEFAULT_REDIS_TIMEOUT_S) -> Redis:
    """A Redis client for rate limiting: short socket timeouts and no retries.

    The default client retries a dead connection with backoff, which turns a Redis outage
    into seconds of latency on every request; here one failed try is the answer.
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


async def _run_script(
    redis: Redis, script: str, sha: str, key: str, args: list[str | int | float]
) -> object:
    try:
        return await redis.evalsha(sha, 1, key, *args)  # type: ignore[misc]
    except NoScriptError:
        # After a Redis restart or failover the script cache is empty: load it once more.
        return await redis.eval(script, 1, key, *args)  # type: ignore[misc]


_GCRA_SHA = hashlib.sha1(_GCRA_LUA.encode()).hexdigest()
_SLOT_SHA = hashlib.sha1(_SLOT_LUA.encode()).hexdigest()


class _RedisHealthProcessState:
    """Process-wide: whether the last call worked, so an outage logs once, not per call."""

    up = True


def _mark_up() -> None:
    if not _RedisHealthProcessState.up:
        log.info("Redis answers rate-limit calls again")
    _RedisHealthProcessState.up = True
    REDIS_UP.set(1)


# Exported at 0 from the start, so that dashboards and alerts see a series, not "no data".
for _operation in ("check_rate", "acquire_slot", "renew_slot", "release_slot", "ping"):
    REDIS_ERRORS.labels(_operation)
for _operation in ("check_rate", "acquire_slot"):
    FAIL_OPEN.labels(_operation)


def _mark_down(operation: str, exc: BaseException) -> None:
    REDIS_ERRORS.labels(operation).inc()
    REDIS_UP.set(0)
    if _RedisHealthProcessState.up:
        log.warning("Redis unavailable for rate limiting (%s): %s", operation, type(exc).__name__)
    _RedisHealthProcessState.up = False


async def ping(redis: Redis, timeout_s: float = 2.0) -> str | None:
    """Ask Redis whether it answers, and keep ``swapmeter_redis_up`` current (an idle
    process would otherwise show the last rate-limit call's answer for as long as it
    stays idle). None when it answers; else the error's name."""
    try:
        await asyncio.wait_for(redis.ping(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - every failure means "Redis is down"
        _mark_down("ping", exc)
        return type(exc).__name__
    _mark_up()
    return None


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "Rate limiting is temporarily unavailable, retry shortly",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


async def check_rate(
    redis: Redis,
    key: str,
    rate_per_second: float,
    burst: int,
    *,
    fail_open: bool = True,
    timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
) -> RateDecision:
    """Count one request against ``key``: ``burst`` at once, then ``rate_per_second``.

    Redis down or slower than ``timeout_s``: allowed (``degraded``) when ``fail_open``,
    else ``ServiceUnavailable``.
    """
    if rate_per_second <= 0 or burst < 1:
        raise ValueError("rate_per_second must be > 0 and burst >= 1")
    interval_us = max(1, round(1_000_000 / rate_per_second))
    try:
        async with asyncio.timeout(timeout_s):
            result = await _run_script(
                redis, _GCRA_LUA, _GCRA_SHA, KEY_PREFIX + key, [interval_us, burst]
            )
    except (RedisError, OSError, TimeoutError) as exc:
        _mark_down("check_rate", exc)
        if not fail_open:
            raise _unavailable() from None
        FAIL_OPEN.labels("check_rate").inc()
        return RateDecision(True, 0.0, burst, 0.0, burst, degraded=True)
    _mark_up()
    allowed, retry_us, remaining, reset_us = (int(v) for v in result)  # type: ignore[attr-defined]
    return RateDecision(
        allowed=bool(allowed),
        retry_after_s=retry_us / 1e6,
        remaining=max(0, remaining),
        reset_s=reset_us / 1e6,
        limit=burst,
    )


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """IETF ``RateLimit-*`` headers (integer seconds), plus ``Retry-After`` when refused.

    A degraded (fail-open) decision gets no RateLimit headers: we would be making them up.
    """
    headers: dict[str, str] = {}
    if not decision.degraded:
        headers["RateLimit-Limit"] = str(decision.limit)
        headers["RateLimit-Remaining"] = str(decision.remaining)
        headers["RateLimit-Reset"] = str(max(0, math.ceil(decision.reset_s)))
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
    return headers


def raise_if_limited(decision: RateDecision) -> None:
    """Raise the contract's 429 ``RateLimited`` (with its headers) for a refused decision."""
    if not decision.allowed:
        wait = max(1, math.ceil(decision.retry_after_s))
        raise RateLimited(
            f"Too many requests, retry in {wait} s",
            headers=rate_limit_headers(decision),
        )


async def enforce_rate_limit(
    redis: Redis,
    key: str,
    rate_per_second: float,
    burst: int,
    *,
    response: Response | None = None,
    fail_open: bool = True,
    timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
) -> RateDecision:
    """Check, raise 429 when refused, else put the RateLimit headers on ``response``.

    Meant for a FastAPI dependency that declares ``response: Response``: FastAPI copies
    those headers onto whatever the endpoint returns.
    """
    decision = await check_rate(
        redis, key, rate_per_second, burst, fail_open=fail_open, timeout_s=timeout_s
    )
    raise_if_limited(decision)
    if response is not None:
        response.headers.update(rate_limit_headers(decision))
    return decision


def _slots_key(tenant_id: object) -> str:
    return f"{SLOTS_PREFIX}{tenant_id}"


def slot_holder(job_id: object, attempt: int) -> str:
    """Who holds a slot: one attempt at a job. A stale attempt still running after its
    lease ran out holds (and gives back) its own slot, never the one of the attempt that
    replaced it, which may be on another worker."""
    return f"{job_id}:{attempt}"


async def acquire_slot(
    redis: Redis,
    tenant_id: object,
    holder: str,
    limit: int,
    ttl_s: float,
    *,
    replaces: str | None = None,
    fail_open: bool = True,
    timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
) -> bool:
    """Take one of the tenant's ``limit`` concurrent-job slots for ``ttl_s`` seconds.

    Idempotent per ``holder`` (``slot_holder``): acquiring again renews the slot instead
    of taking a second one, so a retried claim cannot leak slots. ``replaces``: the slot
    of the job's previous attempt, whose lease ran out, is taken over rather than left to
    expire (its worker may be dead); that attempt's own release then frees nothing. The
    worker should renew with ``renew_slot`` while it runs, and ``release_slot`` when done;
    a crash frees the slot at expiry.
    """
    ttl_ms = max(1, round(ttl_s * 1000))
    args: list[str | int | float] = [holder, limit, ttl_ms, "acquire", replaces or ""]
    try:
        async with asyncio.timeout(timeout_s):
            result = await _run_script(redis, _SLOT_LUA, _SLOT_SHA, _slots_key(tenant_id), args)
    except (RedisError, OSError, TimeoutError) as exc:
        _mark_down("acquire_slot", exc)
        if not fail_open:
            raise _unavailable() from None
        FAIL_OPEN.labels("acquire_slot").inc()
        return True
    _mark_up()
    return int(result) == 1  # type: ignore[call-overload]


async def renew_slot(
    redis: Redis,
    tenant_id: object,
    holder: str,
    ttl_s: float,
    *,
    timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
) -> bool:
    """Push a held slot's expiry ``ttl_s`` from now; False when it is not held (expired)."""
    args: list[str | int | float] = [holder, 0, max(1, round(ttl_s * 1000)), "renew", ""]
    try:
        async with asyncio.timeout(timeout_s):
            result = await _run_script(redis, _SLOT_LUA, _SLOT_SHA, _slots_key(tenant_id), args)
    except (RedisError, OSError, TimeoutError) as exc:
        _mark_down("renew_slot", exc)
        return False
    _mark_up()
    return int(result) == 1  # type: ignore[call-overload]


async def release_slot(
    redis: Redis,
    tenant_id: object,
    holder: str,
    *,
    timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
) -> bool:
    """Give the holder's slot back; False when it was not held. Never raises: expiry cleans up."""
    try:
        async with asyncio.timeout(timeout_s):
            removed = await redis.zrem(_slots_key(tenant_id), holder)
    except (RedisError, OSError, TimeoutError) as exc:
        _mark_down("release_slot", exc)
        return False
    _mark_up()
    return int(removed) == 1


async def active_slots(
    redis: Redis, tenant_id: object, *, timeout_s: float = DEFAULT_REDIS_TIMEOUT_S
) -> int:
    """How many unexpired slots the tenant holds (for metrics and the jobs API)."""
    async with asyncio.timeout(timeout_s):
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros // 1000
        return int(await redis.zcount(_slots_key(tenant_id), f"({now_ms}", "+inf"))
