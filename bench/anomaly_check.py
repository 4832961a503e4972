"""What the anomaly rules add to a swap: the Redis script and the source's perceptual hash.

Run as ``.venv/bin/python bench/anomaly_check.py`` (``--runs N``, default 2,000). It uses
the Redis of SWAPMETER_REDIS_URL (default redis://127.0.0.1:6379/9) under keys of a fresh
random tenant, deleted at the end, and prints p50 and p95 of, each over ``--runs`` calls
from one connection, one at a time:

- a PING: one round trip to Redis and nothing else, the floor;
- the rate limiter's GCRA script, which every swap already runs;
- the anomaly script for a tenant without rules (its answer "off");
- the anomaly script with all three rules on and a user with one source face;
- the same with the user's stored faces at their cap (``MAX_SOURCES`` distinct faces in
  the hour, each compared with the new one: the worst case a user can build);

then the perceptual hash of each portrait of shared/media/faces (which a swap computes,
on a thread, only when its tenant has a same-source rule), and the number of Redis calls
and database statements the check makes per swap when nothing breaks (counted, not timed:
one call, no statement; tests/jobs/test_anomaly_rules.py asserts it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# The repository first: bench/inference.py must not shadow the inference package.
sys.path[:0] = [str(BENCH.parent)]

from redis.asyncio import Redis  # noqa: E402

from app.core import ratelimit  # noqa: E402
from app.jobs.anomaly import counters  # noqa: E402
from inference.phash import SAME_IMAGE_DISTANCE, perceptual_hash  # noqa: E402

FACES = BENCH.parent.parent / "shared" / "media" / "faces"


async def _timed(runs: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    for _ in range(min(50, runs)):
        await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def _row(name: str, figures: tuple[float, float]) -> None:
    print(f"  {name:<58} p50 {figures[0]:7.3f} ms   p95 {figures[1]:7.3f} ms")


async def _redis_figures(redis: Redis, runs: int) -> list[str]:
    tenant = uuid.uuid4()
    off = counters.UserKeys(uuid.uuid4(), 1)
    one = counters.UserKeys(tenant, 1)
    full = counters.UserKeys(tenant, 2)
    await counters.store_rules(redis, off.tenant_id, counters.NO_RULES)
    # Limits far above what the bench sends, and a flag rule: no call is refused.
    rules = counters.Rules(1, 10**6, 100_000, 10**12, "flag")
    await counters.store_rules(redis, tenant, rules)
    face = random.getrandbits(64)
    for _ in range(counters.MAX_SOURCES):
        await _check(redis, full, random.getrandbits(64))

    print(f"Redis round trips, {runs} calls each, one at a time:")
    _row("PING (the floor: one round trip)", await _timed(runs, redis.ping))
    gcra = ratelimit._GCRA_SHA
    key = f"{counters.PREFIX}bench-gcra:{tenant}"
    _row(
        "rate limiter GCRA script (every swap runs it)",
        await _timed(runs, lambda: redis.evalsha(gcra, 1, key, 1, 10**9)),  # type: ignore[misc]
    )
    _row(
        "anomaly script, tenant without rules", await _timed(runs, lambda: _check(redis, off, face))
    )
    _row(
        "anomaly script, 3 rules, one source face",
        await _timed(runs, lambda: _check(redis, one, face)),
    )
    _row(
        f"anomaly script, 3 rules, {counters.MAX_SOURCES} faces stored (the cap)",
        await _timed(runs, lambda: _check(redis, full, random.getrandbits(64))),
    )
    return [
        key,
        counters.rules_key(tenant),
        counters.rules_key(off.tenant_id),
        *one.all(),
        *full.all(),
        *off.all(),
    ]


async def _check(redis: Redis, keys: counters.UserKeys, source: int) -> counters.Verdict:
    verdict = await counters.check(
        redis,
        keys,
        source_hash=source,
        tokens=1,
        max_distance=SAME_IMAGE_DISTANCE,
    )
    # One face sent thousands of times breaks its rule once (then its mark stays): fine here.
    assert verdict.status in ("checked", "off") and not verdict.refused, verdict
    return verdict


def _hash_figures() -> None:
    print("Perceptual hash of the source (on a thread, only for a same-source rule):")
    for path in sorted(FACES.iterdir()):
        data = path.read_bytes()
        perceptual_hash(data)
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            perceptual_hash(data)
            samples.append((time.perf_counter() - started) * 1000)
        median = statistics.median(samples)
        print(f"  {path.name:<20} {len(data) // 1024:>5} KiB   p50 {median:7.2f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    redis = Redis.from_url(os.environ.get("SWAPMETER_REDIS_URL", "redis://127.0.0.1:6379/9"))
    try:
        keys = await _redis_figures(redis, args.runs)
        await redis.delete(*keys)
    finally:
        await redis.aclose()
    _hash_figures()
    print(
        "Per swap that breaks nothing: 1 Redis call (EVALSHA), 0 database statements "
        f"(rules in Redis); CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
