"""Campaign grants: a bulk recharge with ``expires_at`` and ``label``, what a balance shows
expiring, holds that draw from the soonest-expiring grant, and the ``expire`` entry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from app.core.db import Database
from app.core.settings import REPO_ROOT, Settings
from billing import holds, maintenance
from tests.admin.helpers import (
    bearer,
    create_admin,
    create_api_key,
    create_tenant,
    import_users,
    root_headers,
)


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def _bulk(client: httpx.AsyncClient, tenant_id: str, body: Any, **headers: str) -> Any:
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/recharges/bulk",
        json=body,
        headers=headers or await root_headers(client),
    )
    return response


async def _user_id(db: Database, tenant_id: str, external_id: str) -> int:
    async with db.session() as s:
        return (
            await s.execute(
                text("SELECT id FROM users WHERE tenant_id = :t AND external_id = :e"),
                {"t": tenant_id, "e": external_id},
            )
        ).scalar_one()


async def _entries(db: Database, tenant_id: str, kind: str) -> list[int]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT amount FROM ledger_entries WHERE tenant_id = :t AND kind = :k ORDER BY id"
            ),
            {"t": tenant_id, "k": kind},
        )
        return [r.amount for r in rows]


async def _verified(client: httpx.AsyncClient, tenant_id: str) -> bool:
    response = await client.get(
        "/api/v1/admin/ledger/verify",
        params={"tenant_id": tenant_id},
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text
    return bool(response.json()["ok"])


async def test_a_bulk_grant_credits_grants_and_the_balance_shows_what_expires_when(
    client, db
) -> None:
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["ann", "ben"])
    soon, later = _at(timedelta(days=1)), _at(timedelta(days=30))
    first = await _bulk(
        client, tid, {"users": ["ann", "ben"], "amount": 5, "expires_at": soon, "label": "spring"}
    )
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["status"], report["total_amount"], report["label"]) == ("applied", 10, "spring")
    assert datetime.fromisoformat(report["expires_at"]) == datetime.fromisoformat(soon)
    for body in (
        {"entries": [{"user": "ann", "amount": 2}], "expires_at": soon, "label": "spring"},
        {"entries": [{"user": "ann", "amount": 7}], "expires_at": later, "label": "vip"},
        {"entries": [{"user": "ann", "amount": 4}], "expires_at": soon},
        {"users": ["ann"], "amount": 100},  # paid Tokens: never expire
    ):
        assert (await _bulk(client, tid, body)).status_code == 200
    assert await _entries(db, tid, "grant") == [5, 5, 2, 7, 4]
    assert await _entries(db, tid, "recharge") == [100]

    key = (await create_api_key(client, tid, "ann"))["key"]
    balance = (await client.get("/api/v1/balance", headers=bearer(key))).json()
    assert (balance["balance"], balance["available"]) == (118, 118)
    expiring = [(e["amount"], e["label"]) for e in balance["expiring"]]
    assert expiring == [(4, None), (7, "spring"), (7, "vip")]  # soonest first, then label
    assert datetime.fromisoformat(balance["expiring"][0]["expires_at"]) == datetime.fromisoformat(
        soon
    )
    user = await client.get(
        f"/api/v1/admin/tenants/{tid}/users/ann", headers=await root_headers(client)
    )
    assert user.json()["expiring"] == balance["expiring"]
    assert await _verified(client, tid)


async def test_a_grant_body_with_a_bad_expiry_or_label_is_refused_whole(client, db) -> None:
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["ann"])
    for extra, status, code in (
        ({"expires_at": _at(timedelta(seconds=-1))}, 422, "ValidationError"),  # in the past
        ({"expires_at": "2099-01-01T00:00:00"}, 400, "InvalidTime"),  # no time zone
        ({"expires_at": "2099-01-01"}, 400, "InvalidTime"),  # a date, not a date-time
        ({"expires_at": "tomorrow"}, 400, "InvalidTime"),
        ({"expires_at": 4102444800}, 400, "InvalidTime"),
        ({"label": "spring"}, 422, "ValidationError"),  # a campaign without an expiry
        ({"expires_at": _at(timedelta(days=1)), "label": "x" * 101}, 422, "ValidationError"),
        ({"expires_at": _at(timedelta(days=1)), "label": ""}, 422, "ValidationError"),
        ({"expires_at": _at(timedelta(days=1)), "label": "a\u0007b"}, 400, "InvalidText"),
    ):
        response = await _bulk(client, tid, {"users": ["ann"], "amount": 5, **extra})
        assert response.status_code == status, (extra, response.text)
        assert response.json()["error"]["code"] == code, extra
    assert await _entries(db, tid, "grant") == [] and await _entries(db, tid, "recharge") == []


async def test_a_grant_batch_waiting_for_approval_is_applied_as_grants(client, db) -> None:
    tid = (await create_tenant(client))["id"]
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tid}",
        json={"approval_threshold": 5},
        headers=await root_headers(client),
    )
    assert patched.status_code == 200, patched.text
    await import_users(client, tid, ["ann"])
    alice, bob = await create_admin(client, tid), await create_admin(client, tid)
    expires = _at(timedelta(days=2))
    sent = await _bulk(
        client,
        tid,
        {"users": ["ann"], "amount": 6, "expires_at": expires, "label": "launch"},
        **bearer(alice["token"]),
    )
    assert sent.json()["status"] == "pending_approval", sent.text
    approved = await client.post(
        f"/api/v1/admin/tenants/{tid}/recharges/{sent.json()['batch_id']}/approve",
        headers=bearer(bob["token"]),
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["label"]) == ("applied", "launch")
    user = (
        await client.get(f"/api/v1/admin/tenants/{tid}/users/ann", headers=bearer(bob["token"]))
    ).json()
    assert [(e["amount"], e["label"]) for e in user["expiring"]] == [(6, "launch")]
    assert await _entries(db, tid, "grant") == [6]


async def test_a_grant_batch_whose_expiry_passed_before_approval_is_not_applied(client, db) -> None:
    tid = (await create_tenant(client))["id"]
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tid}",
        json={"approval_threshold": 5},
        headers=await root_headers(client),
    )
    assert patched.status_code == 200, patched.text
    await import_users(client, tid, ["ann"])
    alice, bob = await create_admin(client, tid), await create_admin(client, tid)
    body = {"users": ["ann"], "amount": 6, "expires_at": _at(timedelta(hours=1))}
    sent = await _bulk(client, tid, body, **bearer(alice["token"]))
    batch_id = sent.json()["batch_id"]
    async with db.session() as s:  # an approval that came too late
        await s.execute(
            text(
                "UPDATE recharge_batches SET expires_at = now() - interval '1 minute' WHERE id = :b"
            ),
            {"b": batch_id},
        )
    late = await client.post(
        f"/api/v1/admin/tenants/{tid}/recharges/{batch_id}/approve", headers=bearer(bob["token"])
    )
    assert (late.status_code, late.json()["error"]["code"]) == (409, "Conflict")
    batch = await client.get(
        f"/api/v1/admin/tenants/{tid}/recharges/{batch_id}", headers=bearer(bob["token"])
    )
    assert batch.json()["status"] == "pending_approval"
    assert await _entries(db, tid, "grant") == []


async def _grant_and_pay(client: httpx.AsyncClient, db: Database, seconds: float) -> Any:
    """A tenant whose user 'g' has a grant of 5 expiring in ``seconds`` and 10 paid."""
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["g"])
    grant = {"users": ["g"], "amount": 5, "expires_at": _at(timedelta(seconds=seconds))}
    assert (await _bulk(client, tid, grant)).status_code == 200
    assert (await _bulk(client, tid, {"users": ["g"], "amount": 10})).status_code == 200
    return tid, await _user_id(db, tid, "g")


async def _expire_when_due(db: Database, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await maintenance.expire_due_grants(db)  # the workers' upkeep pass (app/jobs/upkeep.py)


async def test_a_hold_draws_from_the_expiring_grant_first_and_the_rest_expires(client, db) -> None:
    """Acceptance: 5 granted expiring in 2 s plus 10 paid; a 3-Token hold draws from the
    grant; after expiry the balance is 10, the ledger shows ``expire`` of 2, verify ok."""
    tid, user_id = await _grant_and_pay(client, db, 2)
    async with db.session() as s:
        await holds.hold(s, uuid.UUID(tid), user_id, "job-a", 3)
    async with db.session() as s:
        await holds.capture(s, uuid.UUID(tid), "job-a", 3)
    key = (await create_api_key(client, tid, "g"))["key"]
    balance = (await client.get("/api/v1/balance", headers=bearer(key))).json()
    assert balance["balance"] == 12 and [e["amount"] for e in balance["expiring"]] == [2]

    await _expire_when_due(db, 2.2)
    balance = (await client.get("/api/v1/balance", headers=bearer(key))).json()
    assert (balance["balance"], balance["held"], balance["expiring"]) == (10, 0, [])
    assert await _entries(db, tid, "expire") == [2]
    ledger = (await client.get("/api/v1/ledger", headers=bearer(key))).json()["items"]
    assert (ledger[0]["kind"], ledger[0]["amount"], ledger[0]["balance_after"]) == (
        "expire",
        -2,
        10,
    )
    assert await _verified(client, tid)


async def test_granted_tokens_a_release_gives_back_still_expire_and_paid_ones_stay(
    client, db
) -> None:
    """A hold open at expiry keeps its grant Tokens (its job may still capture them); once
    released they go back to the grant they came from, which has expired: the next pass
    takes them, and the paid Tokens are untouched."""
    tid, user_id = await _grant_and_pay(client, db, 2)
    async with db.session() as s:
        await holds.hold(s, uuid.UUID(tid), user_id, "job-b", 3)
    await _expire_when_due(db, 2.2)
    assert await _entries(db, tid, "expire") == [2]
    async with db.session() as s:
        await holds.release(s, uuid.UUID(tid), "job-b")
    await maintenance.expire_due_grants(db)
    assert await _entries(db, tid, "expire") == [2, 3]
    key = (await create_api_key(client, tid, "g"))["key"]
    balance = (await client.get("/api/v1/balance", headers=bearer(key))).json()
    assert (balance["balance"], balance["held"], balance["expiring"]) == (10, 0, [])
    assert await _verified(client, tid)


async def test_a_partial_capture_spends_the_grant_and_releases_the_rest_to_where_it_was(
    client, db
) -> None:
    """A hold of 8 draws 5 from the grant and 3 paid; capturing 4 spends 4 granted Tokens,
    so 1 granted Token is left to expire and the 10 paid minus none spent stay."""
    tid, user_id = await _grant_and_pay(client, db, 2)
    async with db.session() as s:
        await holds.hold(s, uuid.UUID(tid), user_id, "job-c", 8)
    async with db.session() as s:
        await holds.capture(s, uuid.UUID(tid), "job-c", 4)
    await _expire_when_due(db, 2.2)
    assert await _entries(db, tid, "expire") == [1]
    async with db.session() as s:
        row = (
            await s.execute(
                text("SELECT balance, held FROM accounts WHERE user_id = :u"), {"u": user_id}
            )
        ).one()
    assert (row.balance, row.held) == (10, 0)
    assert await _verified(client, tid)


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """``swapmeter worker`` on the test database, its cleanup (and expiry pass) every second."""
    env = {
        **os.environ,
        "SWAPMETER_ENVIRONMENT": "test",
        "SWAPMETER_DATABASE_URL": settings.database_url,
        "SWAPMETER_REDIS_URL": settings.redis_url,
        "SWAPMETER_JWT_SECRET": settings.jwt_secret,
        "SWAPMETER_DATA_DIR": str(settings.data_dir),
        "SWAPMETER_RESULTS_CLEANUP_INTERVAL_SECONDS": "1",
        "SWAPMETER_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1", "--metrics-port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


async def test_a_swapmeter_worker_process_expires_the_grant_on_its_own(
    client, db, settings: Settings
) -> None:
    """Acceptance, with a real ``swapmeter worker`` (its periodic cleanup, every second
    here): a grant of 5 expiring in 2 s plus 10 paid; a 3-Token hold draws from the grant
    and its job is charged; the balance ends at 10 with one ``expire`` of 2, verify ok."""
    tid, user_id = await _grant_and_pay(client, db, 2)
    async with db.session() as s:
        await holds.hold(s, uuid.UUID(tid), user_id, "job-w", 3)
    async with db.session() as s:
        await holds.capture(s, uuid.UUID(tid), "job-w", 3)
    worker = _start_worker(settings)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not await _entries(db, tid, "expire"):
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            assert asyncio.get_running_loop().time() < deadline, "nothing expired"
            await asyncio.sleep(0.2)
    finally:
        worker.kill()
        worker.wait(10)
    assert await _entries(db, tid, "expire") == [2]
    async with db.session() as s:
        row = (
            await s.execute(
                text("SELECT balance, held FROM accounts WHERE user_id = :u"), {"u": user_id}
            )
        ).one()
    assert (row.balance, row.held) == (10, 0)
    assert await _verified(client, tid)
