"""A plan's limits: its rate limit on the swap path (one bucket per user, shared by the
user's keys that have no rate of their own; a key's own rate wins), and its cap on a
user's concurrent jobs (the user's next job waits in the queue)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.admin.helpers import create_api_key, root_headers
from tests.jobs.conftest import (
    client_for,
    face,
    job_settings,
    make_customer,
    running_app,
    wait_for_job,
)

OBAMA = base64.b64encode(face("obama.jpg")).decode()
BIDEN = base64.b64encode(face("biden.jpg")).decode()


@pytest.fixture(scope="module")
async def limits_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    # Two worker slots: one for a capped user's running job, one for everyone else.
    configured = job_settings(settings, tmp_path_factory.mktemp("plans"), jobs_worker_concurrency=2)
    async with running_app(configured) as app:
        yield app


async def _statuses(api: httpx.AsyncClient, key: str, n: int) -> list[int]:
    statuses = []
    for _ in range(n):
        # An empty body is refused at validation (422), after the rate limit.
        response = await api.post(
            "/api/v1/swap-face", json={}, headers={"Authorization": f"Bearer {key}"}
        )
        statuses.append(response.status_code)
    return statuses


async def test_a_plans_rate_limits_its_users_across_their_keys(limits_app, db) -> None:
    async with client_for(limits_app) as api:
        customer = await make_customer(api, db, tokens=0, rate_limit_per_second=None)
        base = f"/api/v1/admin/tenants/{customer.tenant_id}"
        headers = await root_headers(api)
        plan = {"daily_free_tokens": 0, "refill_time": "00:00", "timezone": "UTC"}
        answer = await api.put(
            f"{base}/plans/slow", json={**plan, "rate_limit_per_second": 1}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        answer = await api.patch(
            f"{base}/users/{customer.external_id}", json={"plan": "slow"}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        second = await create_api_key(api, customer.tenant_id, customer.external_id)
        own = await create_api_key(
            api, customer.tenant_id, customer.external_id, rate_limit_per_second=1000
        )
        # 1 per second, a burst of 2 (the default 20 per 10/s, scaled): shared by both keys.
        assert await _statuses(api, customer.key, 2) == [422, 422]
        assert await _statuses(api, second["key"], 1) == [429]
        # A key's own rate is its own bucket.
        assert await _statuses(api, own["key"], 5) == [422] * 5


async def test_a_plans_job_cap_queues_its_users_next_job_while_others_run(
    limits_app, db, clip_long: bytes
) -> None:
    async with client_for(limits_app) as api:
        capped = await make_customer(api, db, tokens=500)
        base = f"/api/v1/admin/tenants/{capped.tenant_id}"
        headers = await root_headers(api)
        plan = {"daily_free_tokens": 0, "refill_time": "00:00", "timezone": "UTC"}
        answer = await api.put(
            f"{base}/plans/one-at-a-time", json={**plan, "max_concurrent_jobs": 1}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        answer = await api.patch(
            f"{base}/users/{capped.external_id}", json={"plan": "one-at-a-time"}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        # A second user of the same tenant, on no plan.
        free = await make_customer(api, db, tokens=10, tenant_id=capped.tenant_id)

        video = await api.post(
            "/api/v1/swap-face",
            json={"source": OBAMA, "target": base64.b64encode(clip_long).decode()},
            headers=capped.headers,
        )
        assert video.status_code == 202
        video_id = video.json()["job_id"]
        await wait_for_job(api, capped, video_id, until=lambda j: j["status"] == "processing")
        image = await api.post(
            "/api/v1/swap-face",
            json={"source": OBAMA, "target": BIDEN},
            headers={**capped.headers, "Prefer": "wait=0"},
        )
        image_id = image.json()["job_id"]
        # The worker has a free slot and the tenant is under its cap: the other user's
        # image runs, the capped user's waits for their running video.
        done = await api.post(
            "/api/v1/swap-face", json={"source": OBAMA, "target": BIDEN}, headers=free.headers
        )
        assert done.status_code == 200, done.text
        job = (await api.get(f"/api/v1/jobs/{image_id}", headers=capped.headers)).json()
        assert job["status"] == "queued"

        assert (
            await api.post(f"/api/v1/jobs/{video_id}/cancel", headers=capped.headers)
        ).status_code == 200
        job = await wait_for_job(api, capped, image_id, timeout_s=30)
        assert job["status"] == "succeeded" and job["tokens_charged"] == 1
