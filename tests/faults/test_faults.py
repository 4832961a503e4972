"""Faults under load, against real processes: PostgreSQL restarted, Redis stopped and
started, an API process and a worker SIGKILLed, an API SIGTERMed with requests in flight.

After each: every request, retried with its Idempotency-Key where it got no answer or a
503, has an answer naming its one job; every 200 was charged exactly once; no hold is
left open; the ledger verifies (``assert_every_charge_answered``). Small numbers (tens of
swaps, 8 at a time, the noop swapper) keep each test within seconds on two cores.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text

from app.core.db import Database
from tests.faults.conftest import (
    Request,
    Servers,
    Stack,
    assert_every_charge_answered,
    make_customer,
    retry_unanswered,
    run_load,
    send,
)
from tests.inference.video.clips import make_video
from tests.jobs.conftest import gradient_png

pytestmark = pytest.mark.slow

IMAGE = base64.b64encode(gradient_png(96, 72)).decode()


def image_swaps(n: int) -> list[Request]:
    return [Request(f"swap-{uuid.uuid4()}", {"source": IMAGE, "target": IMAGE}) for _ in range(n)]


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # noqa: ASYNC110 - the load's answers, no event to wait on
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def answered(requests: list[Request]) -> int:
    return sum(1 for r in requests if r.answers)


def first_statuses(requests: list[Request]) -> set[int | None]:
    return {r.answers[0][0] for r in requests}


async def test_postgres_restarted_under_load_hides_no_charge(
    stack: Stack, fault_servers: Servers, fault_db: Database
) -> None:
    _, base = await stack.start_api()
    stack.start_worker()
    customer = await make_customer(base, fault_db, tokens=1000)
    requests = image_swaps(60)

    load = asyncio.create_task(run_load([base], customer, requests, gap_s=0.25))
    await until(lambda: answered(requests) >= 10, "the first answers")
    await fault_servers.restart_postgres(down_s=2.0)
    await load
    await retry_unanswered(base, customer, requests)

    assert first_statuses(requests) - {200}, "the restart went unnoticed: no fault tested"
    jobs = await assert_every_charge_answered(base, fault_db, customer, requests)
    assert all(job["status"] == "succeeded" for job in jobs), jobs


async def test_redis_stopped_and_started_under_load_is_not_noticed_by_clients(
    stack: Stack, fault_servers: Servers, fault_db: Database
) -> None:
    _, base = await stack.start_api()
    stack.start_worker()
    customer = await make_customer(base, fault_db, tokens=1000)
    requests = image_swaps(60)

    load = asyncio.create_task(run_load([base], customer, requests, gap_s=0.25))
    await until(lambda: answered(requests) >= 10, "the first answers")
    await fault_servers.restart_redis(down_s=2.0)
    await load

    # Rate limits and job slots fail open: every swap answered 200 the first time.
    assert [r.status for r in requests] == [200] * len(requests)
    assert all(len(r.answers) == 1 for r in requests)
    await assert_every_charge_answered(base, fault_db, customer, requests)


async def test_an_api_process_killed_under_load_loses_no_answer_that_a_retry_cannot_recover(
    stack: Stack, fault_db: Database
) -> None:
    (doomed, base_a), (_, base_b) = await asyncio.gather(stack.start_api(), stack.start_api())
    stack.start_worker()
    customer = await make_customer(base_b, fault_db, tokens=1000)
    requests = image_swaps(60)

    load = asyncio.create_task(run_load([base_a, base_b], customer, requests, gap_s=0.25))
    await until(lambda: answered(requests) >= 16, "the first answers")
    doomed.send_signal(signal.SIGKILL)
    await load
    await retry_unanswered(base_b, customer, requests)  # the clients of A retry on B

    assert None in first_statuses(requests), "no request to the killed API: no fault tested"
    await assert_every_charge_answered(base_b, fault_db, customer, requests)


@pytest.fixture(scope="session")
def clip_20s(tmp_path_factory: pytest.TempPathFactory) -> str:
    clip = make_video(tmp_path_factory.mktemp("fault-clips") / "twenty.mp4", seconds=20.0)
    return base64.b64encode(clip.read_bytes()).decode()


async def test_a_worker_killed_mid_job_under_load_leaves_every_job_charged_once(
    stack: Stack, fault_db: Database, clip_20s: str
) -> None:
    _, base = await stack.start_api()
    first = stack.start_worker(concurrency=1)
    customer = await make_customer(base, fault_db, tokens=1000)
    video = Request(
        f"video-{uuid.uuid4()}",
        {"source": IMAGE, "target": clip_20s},
        headers={"Prefer": "wait=60"},
    )
    async with httpx.AsyncClient(base_url=base, timeout=90) as client:
        waiting = asyncio.create_task(send(client, customer, video))

        async def video_running() -> bool:
            async with fault_db.session() as s:
                status = (
                    await s.execute(
                        text("SELECT status FROM jobs WHERE user_id = :u AND kind = 'video'"),
                        {"u": customer.user_id},
                    )
                ).scalar()
            return status == "processing"

        deadline = time.monotonic() + 60
        while not await video_running():
            assert time.monotonic() < deadline, "the video never started"
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # mid-video: its lease runs out, another retakes it
        stack.start_worker(concurrency=2)
        requests = image_swaps(40)
        load = asyncio.create_task(run_load([base], customer, requests, gap_s=0.25))
        await load
        await waiting
    await retry_unanswered(base, customer, [*requests, video])

    jobs = await assert_every_charge_answered(base, fault_db, customer, [*requests, video])
    (run,) = [job for job in jobs if job["id"] in video.job_ids()]
    assert run["status"] == "succeeded" and run["attempts"] == 2, run
    assert run["tokens_charged"] == 200 and run["captures"] == 1


async def test_an_api_terminated_with_swaps_in_flight_answers_them_before_it_exits(
    stack: Stack, fault_db: Database
) -> None:
    (api, base), (_, reader) = await asyncio.gather(stack.start_api(), stack.start_api())
    customer = await make_customer(base, fault_db, tokens=1000)
    requests = image_swaps(16)

    # No worker yet: every swap is held and queued, its request waiting for it.
    load = asyncio.create_task(run_load([base], customer, requests, concurrency=len(requests)))

    async def queued() -> int:
        async with fault_db.session() as s:
            return (
                await s.execute(
                    text("SELECT count(*) FROM jobs WHERE user_id = :u"), {"u": customer.user_id}
                )
            ).scalar_one()

    deadline = time.monotonic() + 30
    while await queued() < len(requests):
        assert time.monotonic() < deadline, "the swaps were not all taken in"
        await asyncio.sleep(0.05)
    api.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert api.poll() is None, "the API exited with requests in flight"
    stack.start_worker()
    await load
    # uvicorn ends a graceful shutdown by raising the SIGTERM again: -15, not a crash.
    assert await asyncio.to_thread(api.wait, 30) in (0, -signal.SIGTERM)

    assert [r.status for r in requests] == [200] * len(requests), [r.answers for r in requests]
    await assert_every_charge_answered(reader, fault_db, customer, requests)
