"""An operator refunds what a real job was charged: once per key, never past the charge."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.admin.helpers import bearer, create_admin, create_tenant, root_headers
from tests.jobs.conftest import (
    balance,
    client_for,
    face,
    job_settings,
    make_customer,
    running_app,
    verify_ledger,
    wait_for_job,
)


@pytest.fixture(scope="module")
async def refund_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    configured = job_settings(settings, tmp_path_factory.mktemp("refunds"))
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(refund_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(refund_app) as client:
        yield client


async def _refund(
    api: httpx.AsyncClient,
    tenant_id: str,
    job_id: str,
    body: dict[str, Any],
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or await root_headers(api))
    if key is not None:
        sent["Idempotency-Key"] = key
    return await api.post(
        f"/api/v1/admin/tenants/{tenant_id}/jobs/{job_id}/refund", json=body, headers=sent
    )


def _swap_body() -> dict[str, str]:
    encode = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {"source": encode(face("obama.jpg")), "target": encode(face("biden.jpg"))}


async def test_a_refund_of_a_charged_job_returns_its_tokens_once(api, db) -> None:
    """Acceptance: the same key twice refunds once; a refund beyond the charge is 400."""
    customer = await make_customer(api, db, tokens=10)
    tid = customer.tenant_id
    posted = await api.post("/api/v1/swap-face", json=_swap_body(), headers=customer.headers)
    assert posted.status_code in (200, 202), posted.status_code
    job = await wait_for_job(api, customer, posted.json()["job_id"])
    assert (job["status"], job["tokens_charged"]) == ("succeeded", 1), job
    assert (await balance(api, customer))["balance"] == 9

    past = await _refund(api, tid, job["id"], {"reason": "too much", "amount": 2})
    assert (past.status_code, past.json()["error"]["code"]) == (400, "InvalidAmount")
    assert past.json()["error"]["details"] == {"refundable": 1}

    first = await _refund(api, tid, job["id"], {"reason": "bad result"}, key="refund-1")
    assert first.status_code == 201, first.text
    entry = first.json()
    assert {k: entry[k] for k in ("kind", "amount", "user", "job_id", "reason")} == {
        "kind": "refund",
        "amount": 1,
        "user": customer.external_id,
        "job_id": job["id"],
        "reason": "bad result",
    }
    assert entry["balance_after"] == 10
    again = await _refund(api, tid, job["id"], {"reason": "bad result"}, key="refund-1")
    assert again.status_code == 201 and again.json() == entry
    assert (await balance(api, customer))["balance"] == 10

    beyond = await _refund(api, tid, job["id"], {"reason": "once more"}, key="refund-2")
    assert (beyond.status_code, beyond.json()["error"]["code"]) == (400, "InvalidAmount")
    assert (await balance(api, customer))["balance"] == 10

    async with db.session() as s:
        refunds = (
            await s.execute(
                text(
                    "SELECT count(*) FROM ledger_entries WHERE tenant_id = :t AND kind = 'refund'"
                ),
                {"t": tid},
            )
        ).scalar_one()
        audited = (
            await s.execute(
                text("SELECT target FROM audit_log WHERE tenant_id = :t AND action = 'job.refund'"),
                {"t": tid},
            )
        ).all()
    assert refunds == 1 and [a.target for a in audited] == [f"job:{job['id']}"]
    assert (await verify_ledger(api, tid))["ok"] is True

    # Role rules: auditors are refused, another tenant's admins see no such job.
    auditor = await create_admin(api, tid, role="auditor")
    stranger = await create_admin(api, (await create_tenant(api))["id"])
    body = {"reason": "r"}
    refused = await _refund(api, tid, job["id"], body, headers=bearer(auditor["token"]))
    assert refused.status_code == 403
    hidden = await _refund(api, tid, job["id"], body, headers=bearer(stranger["token"]))
    assert hidden.status_code == 404
    unknown = await _refund(api, tid, str(uuid.uuid4()), body)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "NotFound")
