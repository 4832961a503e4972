"""POST /recharges/bulk/preview: a soft batch's report for a body, with nothing applied."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from app.core.db import Database
from tests.admin.helpers import bearer, create_admin, create_tenant, import_users, root_headers


def _preview_url(tenant_id: str) -> str:
    return f"/api/v1/admin/tenants/{tenant_id}/recharges/bulk/preview"


async def _counts(db: Database, tenant_id: str) -> tuple[int, int, int, int, int]:
    """Ledger entries, batches, audit records, accounts and the sum of balances of a tenant."""
    async with db.session() as s:
        row = (
            await s.execute(
                text(
                    "SELECT (SELECT count(*) FROM ledger_entries WHERE tenant_id = :t), "
                    "(SELECT count(*) FROM recharge_batches WHERE tenant_id = :t), "
                    "(SELECT count(*) FROM audit_log WHERE tenant_id = :t), "
                    "(SELECT count(*) FROM accounts WHERE tenant_id = :t), "
                    "(SELECT coalesce(sum(balance), 0) FROM accounts "
                    " WHERE tenant_id = :t AND kind = 'user')"
                ),
                {"t": tenant_id},
            )
        ).one()
    return tuple(row)  # type: ignore[return-value]


async def _freeze(client: httpx.AsyncClient, tenant_id: str, external_id: str) -> None:
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/users/{external_id}/freeze",
        json={"reason": "test"},
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text


async def test_preview_reports_what_a_soft_batch_would_do_and_writes_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["a", "b", "c", "frozen"])
    await _freeze(client, tenant["id"], "frozen")
    async with db.session() as s:  # a user imported before billing: no account yet
        await s.execute(
            text("INSERT INTO users (tenant_id, external_id) VALUES (:t, 'late')"),
            {"t": tenant["id"]},
        )
    before = await _counts(db, tenant["id"])
    body: dict[str, Any] = {
        "entries": [
            {"user": "a", "amount": 5},
            {"user": "ghost", "amount": 5},
            {"user": "b", "amount": 0},
            {"user": "a", "amount": 7},
            {"user": "frozen", "amount": 5},
            {"user": "late", "amount": 3},
            {"user": "c", "amount": 2},
        ],
        "reason": "check",
    }
    response = await client.post(
        _preview_url(tenant["id"]), json=body, headers=await root_headers(client)
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "preview" and report["batch_id"] is None
    assert (report["requested"], report["succeeded"], report["failed"]) == (7, 3, 4)
    assert report["total_amount"] == 5 + 3 + 2
    assert report["approval_required"] is False
    assert [(f["index"], f["user"], f["code"]) for f in report["failed_users"]] == [
        (1, "ghost", "UserNotFound"),
        (2, "b", "InvalidAmount"),
        (3, "a", "DuplicateEntry"),
        (4, "frozen", "AccountFrozen"),
    ]
    # Nothing written: no ledger entry, batch, audit record, account (not even the
    # accountless user's) or Token.
    assert await _counts(db, tenant["id"]) == before

    # The same body sent for real applies what the preview announced.
    real = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/recharges/bulk",
        json=body,
        headers=await root_headers(client),
    )
    assert real.status_code == 200, real.text
    applied = real.json()
    assert (applied["succeeded"], applied["total_amount"]) == (3, 10)
    assert applied["failed_users"] == report["failed_users"]


async def test_preview_says_when_the_batch_would_need_approval(
    client: httpx.AsyncClient,
) -> None:
    tenant = await create_tenant(client)
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tenant['id']}",
        json={"approval_threshold": 100},
        headers=await root_headers(client),
    )
    assert patched.status_code == 200, patched.text
    await import_users(client, tenant["id"], ["a", "b"])
    response = await client.post(
        _preview_url(tenant["id"]),
        json={"users": ["a", "b"], "amount": 60},
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text
    assert response.json()["approval_required"] is True
    assert response.json()["total_amount"] == 120


async def test_preview_is_open_to_auditors_and_closed_to_other_tenants(
    client: httpx.AsyncClient,
) -> None:
    tenant = await create_tenant(client)
    other = await create_tenant(client)
    await import_users(client, tenant["id"], ["a"])
    auditor = await create_admin(client, tenant["id"], role="auditor")
    outsider = await create_admin(client, other["id"])
    body = {"users": ["a"], "amount": 1}
    allowed = await client.post(
        _preview_url(tenant["id"]), json=body, headers=bearer(auditor["token"])
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["succeeded"] == 1
    hidden = await client.post(
        _preview_url(tenant["id"]), json=body, headers=bearer(outsider["token"])
    )
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "NotFound"
    # The body's envelope is checked as for a real batch.
    bad = await client.post(
        _preview_url(tenant["id"]), json={"users": []}, headers=await root_headers(client)
    )
    assert bad.status_code == 422
