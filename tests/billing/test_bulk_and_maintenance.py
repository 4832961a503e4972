"""Bulk recharge service behaviour that the HTTP tests do not reach, and grant expiry passes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from billing import bulk_recharge, maintenance, service
from billing.bulk_entries import BulkRequest
from tests.billing.conftest import account_state, add_users, make_tenant


async def _submit(db, world, users, amounts, *, mode="soft", by=None):  # type: ignore[no-untyped-def]
    async with db.session() as s:
        return await bulk_recharge.submit(
            s,
            world.tenant_id,
            BulkRequest(users, amounts, mode),
            max_amount=10**12,
            created_by=by,
            created_by_email="ops@example.com",
        )


# A batch's Idempotency-Key is its route's: tests/billing/test_api.py.


async def test_two_concurrent_batches_over_the_same_users_both_apply_without_deadlock(db) -> None:
    world = await make_tenant(db)
    users = [f"u{i}" for i in range(300)]
    await add_users(db, world, users)
    forward = _submit(db, world, users, [1] * 300)
    backward = _submit(db, world, users[::-1], [2] * 300)
    reports = await asyncio.gather(forward, backward, _submit(db, world, users[::2], [4] * 150))
    assert [r.status for r in reports] == ["applied"] * 3
    assert await account_state(db, world.users["u0"]) == (7, 0)
    assert await account_state(db, world.users["u1"]) == (3, 0)


async def test_an_atomic_batch_waiting_for_approval_is_rejected_if_a_user_froze_meanwhile(
    db,
) -> None:
    world = await make_tenant(db, approval_threshold=5)
    await add_users(db, world, ["a", "b"])
    sender, approver = uuid.uuid4(), uuid.uuid4()
    pending = await _submit(db, world, ["a", "b"], [5, 5], mode="atomic", by=sender)
    assert pending.status == "pending_approval"
    async with db.session() as s:
        await service.freeze_account(s, world.tenant_id, world.users["b"], "fraud check")
    async with db.session() as s:
        report, changed = await bulk_recharge.approve(
            s, world.tenant_id, pending.batch_id, approved_by=approver, approved_by_email="x@y.z"
        )
    assert changed and report.status == "rejected" and report.total_amount == 0
    assert [(f["user"], f["code"]) for f in report.failed_users] == [("b", "AccountFrozen")]
    assert await account_state(db, world.users["a"]) == (0, 0)


async def test_a_user_imported_without_an_account_gets_one_when_first_recharged(db) -> None:
    world = await make_tenant(db)
    async with db.session() as s:
        await s.execute(
            text("INSERT INTO users (tenant_id, external_id) VALUES (:t, 'late')"),
            {"t": world.tenant_id},
        )
    report = await _submit(db, world, ["late"], [9])
    assert (report.status, report.succeeded) == ("applied", 1)


async def test_an_expiry_pass_expires_every_due_lot_and_nothing_else(db) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["g1", "g2"])
    now = datetime.now(UTC)
    async with db.session() as s:
        for user in ("g1", "g2"):
            await service.grant(
                s, world.tenant_id, world.users[user], 4, expires_at=now + timedelta(minutes=5)
            )
        await service.grant(
            s, world.tenant_id, world.users["g1"], 3, expires_at=now + timedelta(days=5)
        )
    result = await maintenance.expire_due_grants(db, now=now + timedelta(hours=1))
    assert result.tokens >= 8
    assert await account_state(db, world.users["g1"]) == (3, 0)
    assert await account_state(db, world.users["g2"]) == (0, 0)
