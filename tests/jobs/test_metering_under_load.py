"""Metering under concurrency, metering switched off, and a dead Redis.

The no-op swapper (``SWAPMETER_JOBS_SWAPPER=noop``) returns the target unchanged, so these
tests exercise real HTTP handling, holds, the queue and the worker without spending two
cores on face swapping.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.core.settings import Settings
from tests.jobs.conftest import (
    balance,
    client_for,
    face,
    free_port,
    job_settings,
    ledger_kinds,
    make_customer,
    running_app,
    verify_ledger,
)

SMALL = base64.b64encode(face("obama_small.jpg")).decode()
BODY = {"source": SMALL, "target": SMALL, "response": "url"}


@pytest.fixture(scope="module")
async def noop_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    configured = job_settings(
        settings,
        tmp_path_factory.mktemp("noop"),
        jobs_swapper="noop",
        jobs_worker_concurrency=4,
        max_concurrent_jobs_per_tenant=8,
        db_pool_size=20,
        db_max_overflow=20,
    )
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(noop_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(noop_app) as client:
        yield client


async def test_100_concurrent_swaps_on_40_available_tokens_charge_exactly_40(api, db) -> None:
    customer = await make_customer(api, db, tokens=40, rate_limit_per_second=1000)
    responses = await asyncio.gather(
        *(api.post("/api/v1/swap-face", json=BODY, headers=customer.headers) for _ in range(100))
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 40, statuses
    assert statuses.count(402) == 60, statuses
    refused = [r.json()["error"] for r in responses if r.status_code == 402]
    assert {e["code"] for e in refused} == {"InsufficientBalance"}
    assert all(e["details"]["needed"] == 1 for e in refused)  # what it would have cost
    assert all(r.json()["tokens_charged"] == 1 for r in responses if r.status_code == 200)
    assert await balance(api, customer) == {"balance": 0, "held": 0, "available": 0}
    kinds = await ledger_kinds(api, customer)
    assert [k for k, _ in kinds].count("hold") == 40
    assert [k for k, _ in kinds].count("capture") == 40
    jobs = (await api.get("/api/v1/jobs", params={"limit": 200}, headers=customer.headers)).json()
    assert len(jobs["items"]) == 40
    assert {j["status"] for j in jobs["items"]} == {"succeeded"}
    report = await verify_ledger(api, customer.tenant_id)
    assert report["ok"] is True and report["mismatches"] == []


def second_api_process(noop_app: FastAPI, **overrides: object) -> Settings:
    """Another API process of the same deployment (same database and result store),
    without a worker of its own: the module app's worker runs its jobs."""
    settings: Settings = noop_app.state.settings
    return settings.model_copy(update={"jobs_inprocess_worker": False, **overrides})


async def test_with_metering_off_swaps_hold_and_charge_nothing(noop_app, api, db) -> None:
    customer = await make_customer(api, db, tokens=0)
    unmetered = second_api_process(noop_app, jobs_metering=False)
    async with running_app(unmetered) as application, client_for(application) as free:
        response = await free.post("/api/v1/swap-face", json=BODY, headers=customer.headers)
    assert response.status_code == 200, response.text
    assert response.json()["tokens_charged"] == 0
    job = (
        await api.get(f"/api/v1/jobs/{response.json()['job_id']}", headers=customer.headers)
    ).json()
    assert (job["status"], job["tokens_held"], job["tokens_charged"]) == ("succeeded", 0, 0)
    assert await ledger_kinds(api, customer) == []


async def test_a_dead_redis_neither_hangs_nor_fails_swap_face_and_readyz_says_so(
    noop_app, api, db
) -> None:
    customer = await make_customer(api, db, tokens=5, rate_limit_per_second=1)
    dead = second_api_process(
        noop_app, redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_fail_open=True
    )
    async with running_app(dead) as application, client_for(application) as client:
        started = time.monotonic()
        answers = [
            await client.post("/api/v1/swap-face", json=BODY, headers=customer.headers)
            for _ in range(3)  # over the key's 1/s: limiting is off while Redis is down
        ]
        elapsed = time.monotonic() - started
        ready = await client.get("/readyz")
        scraped = (await client.get("/metrics")).text
    assert [a.status_code for a in answers] == [200, 200, 200], answers[-1].text
    assert "RateLimit-Limit" not in answers[0].headers
    assert elapsed < 10
    # Still serving (fail-open), so still ready: a Redis blip must not take the API pods
    # out of service. Degraded, and it says why.
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["redis"].startswith("error")
    assert "swapmeter_redis_up 0.0" in scraped
    assert await balance(api, customer) == {"balance": 2, "held": 0, "available": 2}


async def test_failing_closed_a_dead_redis_makes_the_api_not_ready(noop_app) -> None:
    """Set to refuse requests it cannot rate-limit, the process would refuse swaps: its
    pods must leave the Service until Redis is back."""
    dead = second_api_process(
        noop_app, redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_fail_open=False
    )
    async with running_app(dead) as application, client_for(application) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert ready.headers["Retry-After"] == "5"
