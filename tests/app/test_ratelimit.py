"""Rate limits and job slots against the real Redis; Redis outages with a dead port.

Every test uses its own key prefix, so tests never see each other's counters.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import Depends, FastAPI, Response
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.core.errors import ServiceUnavailable, install_error_handlers
from app.core.ratelimit import (
    RateDecision,
    acquire_slot,
    active_slots,
    check_rate,
    enforce_rate_limit,
    rate_limit_headers,
    rate_limit_redis,
    release_slot,
    renew_slot,
)


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def _errors_counted(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "swapmeter_ratelimit_redis_errors_total", {"operation": operation}
    )
    return value or 0.0


def _redis_up() -> float | None:
    return REGISTRY.get_sample_value("swapmeter_redis_up")


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def black_hole_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers a command."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@pytest.fixture
async def dead_redis(closed_port: int) -> AsyncIterator[Redis]:
    client = rate_limit_redis(f"redis://127.0.0.1:{closed_port}/0", timeout_s=0.2)
    yield client
    await client.aclose()


async def test_burst_is_admitted_then_refused_with_retry_after_of_one_interval(
    redis: Redis, key: str
) -> None:
    decisions = [await check_rate(redis, key, rate_per_second=0.1, burst=3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    # One token comes back every 10 s; the first was spent a moment ago.
    assert 9.0 < refused.retry_after_s <= 10.0
    headers = rate_limit_headers(refused)
    assert headers["Retry-After"] == "10"
    assert headers["RateLimit-Limit"] == "3"
    assert headers["RateLimit-Remaining"] == "0"
    assert 29 <= int(headers["RateLimit-Reset"]) <= 30  # full again after three intervals


async def test_tokens_refill_at_the_configured_rate(redis: Redis, key: str) -> None:
    for _ in range(2):
        assert (await check_rate(redis, key, rate_per_second=20, burst=2)).allowed
    refused = await check_rate(redis, key, rate_per_second=20, burst=2)
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 0.05
    assert rate_limit_headers(refused)["Retry-After"] == "1"  # never below one second
    await asyncio.sleep(refused.retry_after_s + 0.01)
    assert (await check_rate(redis, key, rate_per_second=20, burst=2)).allowed
    assert not (await check_rate(redis, key, rate_per_second=20, burst=2)).allowed
    await asyncio.sleep(0.12)  # two intervals: the bucket is full again
    again = [await check_rate(redis, key, rate_per_second=20, burst=2) for _ in range(3)]
    assert [d.allowed for d in again] == [True, True, False]


async def test_keys_are_limited_independently(redis: Redis, key: str) -> None:
    assert (await check_rate(redis, key + ":a", rate_per_second=0.1, burst=1)).allowed
    assert not (await check_rate(redis, key + ":a", rate_per_second=0.1, burst=1)).allowed
    assert (await check_rate(redis, key + ":b", rate_per_second=0.1, burst=1)).allowed


async def test_fifty_concurrent_checks_never_admit_more_than_the_burst(
    redis: Redis, key: str
) -> None:
    decisions = await asyncio.gather(
        *(
            check_rate(redis, key, rate_per_second=0.01, burst=10, fail_open=False, timeout_s=5)
            for _ in range(50)
        )
    )
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_slots_cap_concurrent_jobs_and_come_back_on_release(redis: Redis, key: str) -> None:
    assert await acquire_slot(redis, key, "job-1", limit=2, ttl_s=30)
    assert await acquire_slot(redis, key, "job-2", limit=2, ttl_s=30)
    assert not await acquire_slot(redis, key, "job-3", limit=2, ttl_s=30)
    assert await active_slots(redis, key) == 2
    assert await release_slot(redis, key, "job-1")
    assert not await release_slot(redis, key, "job-1")  # already gone
    assert await acquire_slot(redis, key, "job-3", limit=2, ttl_s=30)
    assert await active_slots(redis, key) == 2


async def test_acquiring_a_held_slot_again_does_not_take_a_second_one(
    redis: Redis, key: str
) -> None:
    assert await acquire_slot(redis, key, "job-1", limit=2, ttl_s=30)
    assert await acquire_slot(redis, key, "job-1", limit=2, ttl_s=30)
    assert await active_slots(redis, key) == 1
    assert await acquire_slot(redis, key, "job-2", limit=2, ttl_s=30)


async def test_a_retried_job_takes_over_the_slot_of_its_lapsed_attempt(
    redis: Redis, key: str
) -> None:
    """At its cap, a job whose worker died runs again at once, and the lapsed attempt
    (perhaps still running somewhere) cannot give back the slot of the one that replaced
    it."""
    assert await acquire_slot(redis, key, "job:1", limit=1, ttl_s=30)
    assert await acquire_slot(redis, key, "job:2", limit=1, ttl_s=30, replaces="job:1")
    assert not await release_slot(redis, key, "job:1")
    assert await active_slots(redis, key) == 1
    assert not await acquire_slot(redis, key, "other:1", limit=1, ttl_s=30)


async def test_slot_of_a_crashed_worker_expires(redis: Redis, key: str) -> None:
    assert await acquire_slot(redis, key, "crashed", limit=1, ttl_s=0.3)
    assert not await acquire_slot(redis, key, "next", limit=1, ttl_s=30)
    await asyncio.sleep(0.4)
    assert await acquire_slot(redis, key, "next", limit=1, ttl_s=30)
    assert not await renew_slot(redis, key, "crashed", ttl_s=30)  # its lease is gone


async def test_renewing_a_slot_keeps_it_past_its_first_expiry(redis: Redis, key: str) -> None:
    assert await acquire_slot(redis, key, "long-job", limit=1, ttl_s=0.3)
    await asyncio.sleep(0.15)
    assert await renew_slot(redis, key, "long-job", ttl_s=30)
    await asyncio.sleep(0.3)
    assert not await acquire_slot(redis, key, "other", limit=1, ttl_s=30)
    assert await active_slots(redis, key) == 1


async def test_slots_key_expires_from_redis_once_every_slot_has(redis: Redis, key: str) -> None:
    await acquire_slot(redis, key, "job", limit=1, ttl_s=0.2)
    await asyncio.sleep(0.3)
    assert await redis.exists(f"swapmeter:slots:{key}") == 0


async def test_redis_down_fails_open_and_is_counted(dead_redis: Redis, key: str) -> None:
    before = _errors_counted("check_rate")
    decision = await check_rate(dead_redis, key, rate_per_second=1, burst=1)
    assert decision.allowed and decision.degraded
    assert _errors_counted("check_rate") == before + 1
    assert _redis_up() == 0
    assert "RateLimit-Limit" not in rate_limit_headers(decision)
    assert await acquire_slot(dead_redis, key, "job", limit=1, ttl_s=30)
    assert _errors_counted("acquire_slot") >= 1


async def test_redis_down_fails_closed_with_503_and_retry_after(
    dead_redis: Redis, key: str
) -> None:
    with pytest.raises(ServiceUnavailable) as unavailable:
        await check_rate(dead_redis, key, rate_per_second=1, burst=1, fail_open=False)
    assert unavailable.value.status == 503
    assert int(unavailable.value.headers["Retry-After"]) >= 1
    with pytest.raises(ServiceUnavailable):
        await acquire_slot(dead_redis, key, "job", limit=1, ttl_s=30, fail_open=False)


async def test_redis_up_gauge_recovers_after_a_successful_call(
    dead_redis: Redis, redis: Redis, key: str
) -> None:
    await check_rate(dead_redis, key, rate_per_second=1, burst=1)
    assert _redis_up() == 0
    await check_rate(redis, key, rate_per_second=1, burst=1)
    assert _redis_up() == 1


async def test_hanging_redis_costs_the_short_timeout_not_seconds(
    black_hole_port: int, key: str
) -> None:
    # The default client would retry; even a client with long timeouts is cut short.
    hanging = Redis.from_url(f"redis://127.0.0.1:{black_hole_port}/0", socket_timeout=30)
    try:
        started = time.monotonic()
        decision = await check_rate(hanging, key, rate_per_second=1, burst=1, timeout_s=0.1)
        elapsed = time.monotonic() - started
    finally:
        await hanging.aclose()
    assert decision.allowed and decision.degraded
    assert elapsed < 1.0


def _app(redis: Redis, key: str) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    async def limited(response: Response) -> RateDecision:
        return await enforce_rate_limit(redis, key, 0.1, 2, response=response)

    @app.get("/thing")
    async def thing(decision: RateDecision = Depends(limited)) -> dict[str, bool]:  # noqa: B008
        return {"ok": decision.allowed}

    return app


async def test_http_answers_carry_ratelimit_headers_and_429_has_retry_after(
    redis: Redis, key: str
) -> None:
    transport = httpx.ASGITransport(app=_app(redis, key))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.get("/thing")
        second = await client.get("/thing")
        third = await client.get("/thing")
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "2"
    assert first.headers["RateLimit-Remaining"] == "1"
    assert second.headers["RateLimit-Remaining"] == "0"
    assert "Retry-After" not in second.headers
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "RateLimited"
    assert third.headers["Retry-After"] == "10"
    assert third.headers["RateLimit-Remaining"] == "0"
