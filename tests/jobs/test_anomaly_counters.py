"""The anomaly script in the real Redis: what it counts, what it reports once, what a newer
version of the rules does, and the bounds on what it keeps per user."""

from __future__ import annotations

import random
import uuid

from redis.asyncio import Redis

from app.jobs.anomaly import counters

SAME = 10


async def check(redis: Redis, keys: counters.UserKeys, **kw) -> counters.Verdict:  # type: ignore[no-untyped-def]
    kw.setdefault("source_hash", 0x0123456789ABCDEF)
    kw.setdefault("tokens", 1)
    return await counters.check(redis, keys, max_distance=SAME, **kw)


def user() -> counters.UserKeys:
    return counters.UserKeys(uuid.uuid4(), random.randrange(1, 10**9))


def flip(value: int, bits: range) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


async def test_without_rules_in_redis_the_script_asks_for_them_then_counts_with_them(
    redis: Redis,
) -> None:
    keys = user()
    assert (await check(redis, keys)).status == "unknown"
    rules = counters.Rules(1, 2, 0, 0, "freeze")
    first = await check(redis, keys, loaded=rules)
    assert first.status == "checked" and not first.breaches
    assert not first.needs_hash and not first.needs_tokens
    await check(redis, keys)
    third = await check(redis, keys)
    assert third.refused and third.breaches == (counters.Breach("requests_per_minute", 3, 2),)


async def test_a_stale_load_never_overwrites_newer_rules(redis: Redis) -> None:
    keys = user()
    await counters.store_rules(redis, keys.tenant_id, counters.Rules(5, 0, 0, 0, "flag"))
    await counters.store_rules(redis, keys.tenant_id, counters.Rules(4, 1, 0, 0, "freeze"))
    stale = await check(redis, keys, loaded=counters.Rules(3, 1, 0, 0, "freeze"))
    assert stale.status == "off"  # version 5 (no limits) stands


async def test_the_script_asks_for_the_hash_and_the_tokens_only_when_a_rule_needs_them(
    redis: Redis,
) -> None:
    keys = user()
    await counters.store_rules(redis, keys.tenant_id, counters.Rules(1, 0, 2, 0, "flag"))
    need = await check(redis, keys, source_hash=None, tokens=None)
    assert (need.status, need.needs_hash, need.needs_tokens) == ("need", True, False)
    assert (await check(redis, keys, tokens=None)).status == "checked"


async def test_near_hashes_count_as_one_source_and_far_ones_do_not(redis: Redis) -> None:
    keys = user()
    await counters.store_rules(redis, keys.tenant_id, counters.Rules(1, 0, 2, 0, "flag"))
    face = random.getrandbits(64)
    assert not (await check(redis, keys, source_hash=face)).breaches
    assert not (await check(redis, keys, source_hash=flip(face, range(0, SAME + 6)))).breaches
    assert not (await check(redis, keys, source_hash=flip(face, range(40, 43)))).breaches
    third = await check(redis, keys, source_hash=flip(face, range(50, 50 + SAME)))
    assert third.breaches == (counters.Breach("same_source_per_hour", 3, 2),)
    assert not third.refused  # a flag rule lets it through, counted
    # Reported once while its flag is open; counted on.
    assert not (await check(redis, keys, source_hash=face)).breaches
    await counters.forget_breach(redis, keys, "same_source_per_hour")
    again = await check(redis, keys, source_hash=face)
    assert again.breaches == (counters.Breach("same_source_per_hour", 5, 2),)


async def test_a_refused_swap_is_not_counted_and_a_reset_starts_afresh(redis: Redis) -> None:
    keys = user()
    await counters.store_rules(redis, keys.tenant_id, counters.Rules(1, 0, 0, 5, "freeze"))
    assert not (await check(redis, keys, tokens=4)).breaches
    refused = await check(redis, keys, tokens=2)
    assert refused.refused and refused.breaches[0].observed == 6
    assert await redis.get(keys.all()[2]) == b"4"  # the refused 2 were not counted
    await counters.reset_user(redis, keys)
    assert not (await check(redis, keys, tokens=5)).breaches


async def test_what_a_user_keeps_in_redis_is_bounded_whatever_they_send(redis: Redis) -> None:
    keys = user()
    await counters.store_rules(redis, keys.tenant_id, counters.Rules(1, 10**6, 1000, 0, "flag"))
    face = random.getrandbits(64)
    for _ in range(300):
        await check(redis, keys, source_hash=face)
    # One face sent 300 times: one field of per-minute counts, not 300 times.
    (counts,) = (await redis.hgetall(keys.all()[1])).values()
    assert len(counts) < 40 and counts.decode().endswith(":300")
    for _ in range(counters.MAX_SOURCES + 20):
        await check(redis, keys, source_hash=random.getrandbits(64))
    assert await redis.hlen(keys.all()[1]) == counters.MAX_SOURCES
    assert 0 < await redis.ttl(keys.all()[1]) <= 3660
    # Requests per second, at most the last 60 seconds.
    assert 1 <= await redis.hlen(keys.all()[0]) <= 60
