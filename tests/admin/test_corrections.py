"""Operators' corrections: signed adjustments of a user's Tokens (refunds of a job's charge
run a real job: tests/jobs/test_refunds.py)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from app.core.db import Database
from tests.admin.helpers import bearer, create_admin, create_tenant, import_users, root_headers


def _url(tenant_id: str, user: str) -> str:
    return f"/api/v1/admin/tenants/{tenant_id}/users/{user}/adjustments"


async def _adjust(
    client: httpx.AsyncClient,
    tenant_id: str,
    user: str,
    body: Any,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or await root_headers(client))
    if key is not None:
        sent["Idempotency-Key"] = key
    return await client.post(_url(tenant_id, user), json=body, headers=sent)


async def _balance(client: httpx.AsyncClient, tenant_id: str, user: str) -> int:
    response = await client.get(
        f"/api/v1/admin/tenants/{tenant_id}/users/{user}", headers=await root_headers(client)
    )
    return int(response.json()["balance"])


async def _audit(db: Database, tenant_id: str, action: str) -> list[dict[str, Any]]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT target, details, actor FROM audit_log"
                " WHERE tenant_id = :t AND action = :a ORDER BY id"
            ),
            {"t": tenant_id, "a": action},
        )
        return [dict(r._mapping) for r in rows]


async def test_an_adjustment_credits_or_debits_once_per_key_with_its_reason_audited(
    client, db
) -> None:
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["ann"])
    credit = await _adjust(client, tid, "ann", {"amount": 12, "reason": "goodwill"}, key="c-1")
    assert credit.status_code == 201, credit.text
    entry = credit.json()
    assert {k: entry[k] for k in ("user", "kind", "amount", "balance_after", "reason")} == {
        "user": "ann",
        "kind": "adjustment",
        "amount": 12,
        "balance_after": 12,
        "reason": "goodwill",
    }
    assert entry["operator"] and entry["job_id"] is None
    again = await _adjust(client, tid, "ann", {"amount": 12, "reason": "goodwill"}, key="c-1")
    assert again.status_code == 201 and again.json() == entry
    assert again.headers.get("Idempotent-Replayed") == "true"

    debit = await _adjust(client, tid, "ann", {"amount": -5, "reason": "double credit"})
    assert debit.status_code == 201, debit.text
    assert (debit.json()["amount"], debit.json()["balance_after"]) == (-5, 7)
    assert await _balance(client, tid, "ann") == 7

    too_much = await _adjust(client, tid, "ann", {"amount": -8, "reason": "x"})
    assert too_much.status_code == 402
    assert too_much.json()["error"]["code"] == "InsufficientBalance"
    reused = await _adjust(client, tid, "ann", {"amount": 1, "reason": "other"}, key="c-1")
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "IdempotencyKeyReused"
    assert await _balance(client, tid, "ann") == 7

    audited = await _audit(db, tid, "user.adjust")
    assert [(a["target"], a["details"]["amount"], a["details"]["reason"]) for a in audited] == [
        ("user:ann", 12, "goodwill"),
        ("user:ann", -5, "double credit"),
    ]
    verify = await client.get(
        "/api/v1/admin/ledger/verify", params={"tenant_id": tid}, headers=await root_headers(client)
    )
    assert verify.json()["ok"] is True


async def test_an_adjustment_takes_strict_non_zero_integers_and_a_reason(client, db) -> None:
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["ann"])
    for body, status, code in [
        ({"amount": 0, "reason": "r"}, 400, "InvalidAmount"),
        ({"amount": 10**13, "reason": "r"}, 400, "InvalidAmount"),
        ({"amount": 1.0, "reason": "r"}, 400, "InvalidAmount"),
        ({"amount": "5", "reason": "r"}, 400, "InvalidAmount"),
        ({"amount": True, "reason": "r"}, 400, "InvalidAmount"),
        ({"amount": 5, "reason": "bad\u0007bell"}, 400, "InvalidText"),
        ({"amount": 5}, 422, "ValidationError"),
        ({"amount": 5, "reason": ""}, 422, "ValidationError"),
    ]:
        response = await _adjust(client, tid, "ann", body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    unknown = await _adjust(client, tid, "nobody", {"amount": 1, "reason": "r"})
    assert unknown.json()["error"]["code"] == "UserNotFound"
    assert await _balance(client, tid, "ann") == 0


async def test_adjustments_are_closed_to_auditors_and_to_other_tenants_admins(client) -> None:
    mine, other = await create_tenant(client), await create_tenant(client)
    await import_users(client, mine["id"], ["ann"])
    auditor = await create_admin(client, mine["id"], role="auditor")
    stranger = await create_admin(client, other["id"])
    body = {"amount": 3, "reason": "r"}
    refused = await _adjust(client, mine["id"], "ann", body, headers=bearer(auditor["token"]))
    assert refused.status_code == 403
    hidden = await _adjust(client, mine["id"], "ann", body, headers=bearer(stranger["token"]))
    assert hidden.status_code == 404
    missing = await _adjust(client, str(uuid.uuid4()), "ann", body)
    assert missing.status_code == 404
    assert await _balance(client, mine["id"], "ann") == 0


async def test_a_frozen_account_takes_no_adjustment(client) -> None:
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["ann"])
    frozen = await client.post(
        f"/api/v1/admin/tenants/{tid}/users/ann/freeze",
        json={"reason": "review"},
        headers=await root_headers(client),
    )
    assert frozen.status_code == 200
    response = await _adjust(client, tid, "ann", {"amount": 3, "reason": "r"})
    assert (response.status_code, response.json()["error"]["code"]) == (403, "AccountFrozen")


async def test_an_adjustment_sent_again_after_its_key_was_purged_moves_nothing(client, db) -> None:
    """The ledger keeps the request's key too: a retry days later, once the key store
    forgot it, answers the same entry and writes no second entry or audit record."""
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["ann"])
    body = {"amount": 4, "reason": "late credit"}
    first = await _adjust(client, tid, "ann", body, key="late-1")
    assert first.status_code == 201, first.text
    async with db.session() as s:
        await s.execute(
            text("DELETE FROM idempotency_keys WHERE scope = :s AND key = 'late-1'"),
            {"s": f"tenant:{tid}"},
        )
    again = await _adjust(client, tid, "ann", body, key="late-1")
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    assert await _balance(client, tid, "ann") == 4
    assert len(await _audit(db, tid, "user.adjust")) == 1
