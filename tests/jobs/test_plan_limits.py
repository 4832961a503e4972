"""A plan's rate limit on the swap path: one bucket per user, shared by the user's keys
that have no rate of their own; a key's own rate wins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.admin.helpers import create_api_key, root_headers
from tests.jobs.conftest import client_for, job_settings, make_customer, running_app


@pytest.fixture(scope="module")
async def limits_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    async with running_app(job_settings(settings, tmp_path_factory.mktemp("plans"))) as app:
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
