"""The Token ledger's operations against a real PostgreSQL: arithmetic, idempotency, refusals."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.core.db import Database
from app.core.errors import (
    AccountFrozen,
    Conflict,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    NotFound,
)
from billing import holds, maintenance, service
from billing.verify import check_ledger
from tests.billing.conftest import World, account_state, add_users, make_tenant


async def _recharge(db: Database, world: World, user: str, amount: int, key: str | None = None):
    async with db.session() as s:
        return await service.recharge(
            s, world.tenant_id, world.users[user], amount, idempotency_key=key, operator="test"
        )


async def _assert_ledger_ok(db: Database, world: World) -> None:
    async with db.session() as s:
        check = await check_ledger(s, world.tenant_id)
    assert check.mismatches == []
    assert check.ok


async def test_recharge_credits_the_user_and_the_tenant_still_sums_to_zero(db, world) -> None:
    moved = await _recharge(db, world, "alice", 250, key="r1")
    assert (moved.kind, moved.amount, moved.balance_after, moved.replayed) == (
        "recharge",
        250,
        250,
        False,
    )
    assert await account_state(db, world.users["alice"]) == (250, 0)
    async with db.session() as s:
        total = (
            await s.execute(
                text("SELECT sum(balance) FROM accounts WHERE tenant_id = :t"),
                {"t": world.tenant_id},
            )
        ).scalar_one()
    assert total == 0
    await _assert_ledger_ok(db, world)


async def test_recharge_replayed_with_its_key_credits_once_and_returns_the_first_entry(
    db, world
) -> None:
    first = await _recharge(db, world, "alice", 100, key="same")
    again = await _recharge(db, world, "alice", 100, key="same")
    assert again.replayed and again.entry_id == first.entry_id
    assert again.balance_after == first.balance_after == 100
    assert await account_state(db, world.users["alice"]) == (100, 0)


async def test_concurrent_recharges_with_one_key_credit_once(db, world) -> None:
    results = await asyncio.gather(*(_recharge(db, world, "alice", 7, key="k") for _ in range(10)))
    assert len({r.entry_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert await account_state(db, world.users["alice"]) == (7, 0)


async def test_a_recharge_key_reused_for_another_amount_or_user_is_refused(db, world) -> None:
    await _recharge(db, world, "alice", 100, key="once")
    with pytest.raises(IdempotencyKeyReused):
        await _recharge(db, world, "alice", 101, key="once")
    with pytest.raises(IdempotencyKeyReused):
        await _recharge(db, world, "bob", 100, key="once")
    assert await account_state(db, world.users["bob"]) == (0, 0)


@pytest.mark.parametrize("amount", [0, -5, 10**12 + 1, 1.5, True, "10"])
async def test_recharge_refuses_amounts_that_are_not_positive_integers_in_range(
    db, world, amount
) -> None:
    with pytest.raises(InvalidAmount):
        await _recharge(db, world, "alice", amount)


async def test_recharge_of_a_user_without_account_is_not_found(db, world) -> None:
    async with db.session() as s:
        with pytest.raises(NotFound):
            await service.recharge(s, world.tenant_id, -1, 5)


async def test_hold_reserves_tokens_without_changing_the_balance(db, world) -> None:
    await _recharge(db, world, "alice", 10)
    async with db.session() as s:
        h = await holds.hold(s, world.tenant_id, world.users["alice"], "job-1", 4)
    assert (h.status, h.amount, h.balance, h.held) == ("held", 4, 10, 4)
    async with db.session() as s:
        view = await service.account_view(s, world.users["alice"])
    assert (view.balance, view.held, view.available) == (10, 4, 6)
    await _assert_ledger_ok(db, world)


async def test_hold_beyond_the_available_tokens_is_refused_and_changes_nothing(db, world) -> None:
    await _recharge(db, world, "alice", 10)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "job-1", 8)
    async with db.session() as s:
        with pytest.raises(InsufficientBalance) as refused:
            await holds.hold(s, world.tenant_id, world.users["alice"], "job-2", 3)
    assert refused.value.status == 402 and refused.value.details == {"available": 2, "needed": 3}
    assert await account_state(db, world.users["alice"]) == (10, 8)


async def test_holding_a_reference_again_returns_the_existing_hold(db, world) -> None:
    await _recharge(db, world, "alice", 10)
    async with db.session() as s:
        first = await holds.hold(s, world.tenant_id, world.users["alice"], "job-1", 6)
    async with db.session() as s:
        again = await holds.hold(s, world.tenant_id, world.users["alice"], "job-1", 6)
    assert again.replayed and again.id == first.id
    assert await account_state(db, world.users["alice"]) == (10, 6)
    async with db.session() as s:
        with pytest.raises(IdempotencyKeyReused):
            await holds.hold(s, world.tenant_id, world.users["alice"], "job-1", 5)


async def test_partial_capture_charges_the_amount_and_releases_the_rest(db, world) -> None:
    await _recharge(db, world, "alice", 100)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "video-1", 60)
    async with db.session() as s:
        h = await holds.capture(s, world.tenant_id, "video-1", 25)
    assert (h.status, h.captured, h.released, h.balance, h.held) == ("captured", 25, 35, 75, 0)
    async with db.session() as s:
        revenue = (
            await s.execute(
                text("SELECT balance FROM accounts WHERE tenant_id = :t AND kind = 'revenue'"),
                {"t": world.tenant_id},
            )
        ).scalar_one()
    assert revenue == 25
    await _assert_ledger_ok(db, world)


async def test_capture_replays_with_the_same_amount_and_refuses_a_different_one(db, world) -> None:
    await _recharge(db, world, "alice", 100)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "job", 10)
    async with db.session() as s:
        first = await holds.capture(s, world.tenant_id, "job", 10)
    async with db.session() as s:
        again = await holds.capture(s, world.tenant_id, "job", 10)
    assert again.replayed and (again.captured, again.balance) == (first.captured, 90)
    async with db.session() as s:
        with pytest.raises(Conflict):
            await holds.capture(s, world.tenant_id, "job", 5)
    async with db.session() as s:
        with pytest.raises(Conflict):
            await holds.release(s, world.tenant_id, "job")
    assert await account_state(db, world.users["alice"]) == (90, 0)


async def test_capture_of_more_than_the_hold_is_refused(db, world) -> None:
    await _recharge(db, world, "alice", 100)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "job", 10)
    async with db.session() as s:
        with pytest.raises(InvalidAmount):
            await holds.capture(s, world.tenant_id, "job", 11)
    assert await account_state(db, world.users["alice"]) == (100, 10)


async def test_capture_of_zero_releases_the_whole_hold(db, world) -> None:
    await _recharge(db, world, "alice", 5)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "job", 5)
    async with db.session() as s:
        h = await holds.capture(s, world.tenant_id, "job", 0)
    assert (h.status, h.captured, h.released) == ("released", 0, 5)
    assert await account_state(db, world.users["alice"]) == (5, 0)
    await _assert_ledger_ok(db, world)


async def test_release_gives_the_whole_hold_back_once(db, world) -> None:
    await _recharge(db, world, "alice", 5)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "job", 3)
    async with db.session() as s:
        h = await holds.release(s, world.tenant_id, "job")
    assert (h.status, h.released, h.balance, h.held) == ("released", 3, 5, 0)
    async with db.session() as s:
        again = await holds.release(s, world.tenant_id, "job")
    assert again.replayed
    assert await account_state(db, world.users["alice"]) == (5, 0)
    async with db.session() as s:
        with pytest.raises(NotFound):
            await holds.release(s, world.tenant_id, "no-such-job")
    await _assert_ledger_ok(db, world)


async def test_refund_gives_back_up_to_the_captured_amount_and_replays_by_key(db, world) -> None:
    await _recharge(db, world, "alice", 50)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "job", 20)
    async with db.session() as s:
        await holds.capture(s, world.tenant_id, "job", 12)
    async with db.session() as s:
        r1 = await holds.refund(
            s, world.tenant_id, "job", 5, idempotency_key="rf1", reason="bad result"
        )
    assert (r1.amount, r1.balance_after) == (5, 43)
    async with db.session() as s:
        again = await holds.refund(s, world.tenant_id, "job", 5, idempotency_key="rf1")
    assert again.replayed and again.entry_id == r1.entry_id
    async with db.session() as s:
        with pytest.raises(InvalidAmount):
            await holds.refund(s, world.tenant_id, "job", 8, idempotency_key="rf2")
    async with db.session() as s:
        await holds.refund(s, world.tenant_id, "job", 7, idempotency_key="rf3")
    assert await account_state(db, world.users["alice"]) == (50, 0)
    await _assert_ledger_ok(db, world)


async def test_refund_of_a_released_hold_is_a_conflict(db, world) -> None:
    await _recharge(db, world, "alice", 5)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["alice"], "job", 5)
    async with db.session() as s:
        await holds.release(s, world.tenant_id, "job")
    async with db.session() as s:
        with pytest.raises(Conflict):
            await holds.refund(s, world.tenant_id, "job", 1)


async def test_adjustments_move_tokens_both_ways_and_never_overdraw(db, world) -> None:
    await _recharge(db, world, "alice", 10)
    async with db.session() as s:
        up = await service.adjust(
            s,
            world.tenant_id,
            world.users["alice"],
            5,
            reason="goodwill",
            operator="ops@x",
            idempotency_key="a1",
        )
        down = await service.adjust(
            s,
            world.tenant_id,
            world.users["alice"],
            -12,
            reason="chargeback",
            operator="ops@x",
            idempotency_key="a2",
        )
    assert (up.amount, up.balance_after, down.amount, down.balance_after) == (5, 15, -12, 3)
    async with db.session() as s:
        with pytest.raises(InsufficientBalance):
            await service.adjust(
                s, world.tenant_id, world.users["alice"], -4, reason="too much", operator="ops@x"
            )
        with pytest.raises(InvalidAmount):
            await service.adjust(
                s, world.tenant_id, world.users["alice"], 4, reason="", operator="ops@x"
            )
    async with db.session() as s:
        again = await service.adjust(
            s,
            world.tenant_id,
            world.users["alice"],
            -12,
            reason="chargeback",
            operator="ops@x",
            idempotency_key="a2",
        )
    assert again.replayed
    assert await account_state(db, world.users["alice"]) == (3, 0)
    await _assert_ledger_ok(db, world)


async def test_a_frozen_account_refuses_holds_recharges_and_adjustments_until_unfrozen(
    db, world
) -> None:
    alice = world.users["alice"]
    await _recharge(db, world, "alice", 10)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, alice, "running-job", 4)
        await service.freeze_account(s, world.tenant_id, alice, "chargeback investigation")
    for attempt in (
        lambda s: holds.hold(s, world.tenant_id, alice, "new-job", 1),
        lambda s: service.recharge(s, world.tenant_id, alice, 1),
        lambda s: service.grant(s, world.tenant_id, alice, 1),
        lambda s: service.adjust(s, world.tenant_id, alice, 1, reason="r", operator="o"),
        lambda s: service.adjust(s, world.tenant_id, alice, -1, reason="r", operator="o"),
    ):
        async with db.session() as s:
            with pytest.raises(AccountFrozen):
                await attempt(s)
    # The job that was already running still settles.
    async with db.session() as s:
        await holds.capture(s, world.tenant_id, "running-job", 4)
        assert (await service.account_view(s, alice)).status == "frozen"
    assert await account_state(db, alice) == (6, 0)
    async with db.session() as s:
        await service.unfreeze_account(s, world.tenant_id, alice, "cleared")
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, alice, "new-job", 1)
    await _assert_ledger_ok(db, world)


async def test_grant_expiry_takes_back_only_the_unspent_part(db, world) -> None:
    alice = world.users["alice"]
    now = datetime.now(UTC)
    await _recharge(db, world, "alice", 5)
    async with db.session() as s:
        await service.grant(
            s,
            world.tenant_id,
            alice,
            10,
            expires_at=now + timedelta(days=1),
            idempotency_key="welcome",
        )
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, alice, "job", 4)
        await holds.capture(s, world.tenant_id, "job", 4)  # spent from the grant first
    async with db.session() as s:
        result = await service.expire_grants(s, now + timedelta(days=2))
    assert result.grants >= 1
    assert await account_state(db, alice) == (5, 0)  # 10 granted, 4 spent, 6 expired
    async with db.session() as s:
        entry = (
            await s.execute(
                text(
                    "SELECT amount, balance_after FROM ledger_entries "
                    "WHERE tenant_id = :t AND kind = 'expire'"
                ),
                {"t": world.tenant_id},
            )
        ).one()
        again = await service.expire_grants(s, now + timedelta(days=3))
    assert tuple(entry) == (6, 5)
    assert await account_state(db, alice) == (5, 0)
    del again
    await _assert_ledger_ok(db, world)


async def test_spending_uses_the_soonest_expiring_grant_first(db, world) -> None:
    alice = world.users["alice"]
    now = datetime.now(UTC)
    async with db.session() as s:
        await service.grant(s, world.tenant_id, alice, 10, expires_at=now + timedelta(days=30))
        await service.grant(s, world.tenant_id, alice, 10, expires_at=now + timedelta(days=1))
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, alice, "job", 13)
        await holds.capture(s, world.tenant_id, "job", 13)
    async with db.session() as s:
        lots = (
            (
                await s.execute(
                    text(
                        "SELECT remaining FROM token_grants g "
                        "JOIN accounts a ON a.id = g.account_id "
                        "WHERE a.user_id = :u ORDER BY g.expires_at"
                    ),
                    {"u": alice},
                )
            )
            .scalars()
            .all()
        )
    assert lots == [0, 7]
    async with db.session() as s:
        await service.expire_grants(s, now + timedelta(days=2))
    assert await account_state(db, alice) == (7, 0)  # nothing left to expire in the first lot
    async with db.session() as s:
        await service.expire_grants(s, now + timedelta(days=31))
    assert await account_state(db, alice) == (0, 0)
    await _assert_ledger_ok(db, world)


async def test_expiry_leaves_tokens_under_a_hold_alone(db, world) -> None:
    alice = world.users["alice"]
    now = datetime.now(UTC)
    async with db.session() as s:
        await service.grant(s, world.tenant_id, alice, 10, expires_at=now + timedelta(hours=1))
        await holds.hold(s, world.tenant_id, alice, "job", 7)
    async with db.session() as s:
        await service.expire_grants(s, now + timedelta(hours=2))
    assert await account_state(db, alice) == (7, 7)
    async with db.session() as s:
        h = await holds.capture(s, world.tenant_id, "job", 7)
    assert (h.balance, h.held) == (0, 0)
    await _assert_ledger_ok(db, world)


async def test_granted_tokens_held_at_expiry_expire_once_the_hold_is_released(db, world) -> None:
    """A job held 7 of 10 granted Tokens when they expired: 3 go at once, and the other 7
    go on the next pass after the job failed and released them, not never."""
    alice = world.users["alice"]
    now = datetime.now(UTC)
    async with db.session() as s:
        await service.grant(s, world.tenant_id, alice, 10, expires_at=now + timedelta(hours=1))
        await holds.hold(s, world.tenant_id, alice, "job", 7)
    first = await maintenance.expire_due_grants(db, now=now + timedelta(hours=2))
    assert first.tokens == 3 and await account_state(db, alice) == (7, 7)
    async with db.session() as s:
        await holds.release(s, world.tenant_id, "job")
    assert await account_state(db, alice) == (7, 0)
    second = await maintenance.expire_due_grants(db, now=now + timedelta(hours=3))
    assert second.tokens == 7 and await account_state(db, alice) == (0, 0)
    third = await maintenance.expire_due_grants(db, now=now + timedelta(hours=4))
    assert (third.grants, third.tokens) == (0, 0)
    await _assert_ledger_ok(db, world)


@pytest.mark.parametrize("expiry_first", [False, True], ids=["capture-first", "expiry-first"])
async def test_a_job_holding_granted_tokens_at_their_expiry_costs_the_same_either_way(
    db, world, expiry_first: bool
) -> None:
    """100 bought and 50 granted Tokens; a job holds 100 when the grant expires, then
    succeeds. Its capture spends the grant first, so 50 bought Tokens are left, whether
    the expiry pass runs before the capture or after it."""
    alice = world.users["alice"]
    now = datetime.now(UTC)
    await _recharge(db, world, "alice", 100)
    async with db.session() as s:
        await service.grant(s, world.tenant_id, alice, 50, expires_at=now + timedelta(hours=1))
        await holds.hold(s, world.tenant_id, alice, "job", 100)

    async def expiry_pass() -> None:
        await maintenance.expire_due_grants(db, now=now + timedelta(hours=2))

    if expiry_first:
        await expiry_pass()
    async with db.session() as s:
        await holds.capture(s, world.tenant_id, "job", 100)
    await expiry_pass()
    assert await account_state(db, alice) == (50, 0)
    await _assert_ledger_ok(db, world)


async def test_grant_without_expiry_never_expires(db, world) -> None:
    alice = world.users["alice"]
    async with db.session() as s:
        await service.grant(s, world.tenant_id, alice, 3, reason="promo")
    async with db.session() as s:
        await service.expire_grants(s, datetime.now(UTC) + timedelta(days=3650))
    assert await account_state(db, alice) == (3, 0)


async def test_ledger_rows_cannot_be_edited_or_deleted(db, world) -> None:
    moved = await _recharge(db, world, "alice", 10)
    for statement in (
        "UPDATE ledger_entries SET amount = 1 WHERE id = :id",
        "DELETE FROM ledger_entries WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.session() as s:
                await s.execute(text(statement), {"id": moved.entry_id})


async def test_200_concurrent_one_token_holds_against_100_available_exactly_100_succeed(
    db,
) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["busy"])
    user = world.users["busy"]
    await _recharge(db, world, "busy", 100)
    lowest = {"balance": 100, "available": 100}

    async def one(i: int) -> bool:
        try:
            async with db.session() as s:
                h = await holds.hold(s, world.tenant_id, user, f"job-{i}", 1)
                lowest["balance"] = min(lowest["balance"], h.balance)
                lowest["available"] = min(lowest["available"], h.balance - h.held)
            return True
        except InsufficientBalance:
            return False

    outcomes = await asyncio.gather(*(one(i) for i in range(200)))
    assert sum(outcomes) == 100
    assert lowest["balance"] == 100 and lowest["available"] == 0
    assert await account_state(db, user) == (100, 100)
    await _assert_ledger_ok(db, world)


async def test_verify_reports_a_balance_tampered_directly_in_sql(db) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["victim"])
    await _recharge(db, world, "victim", 40)
    await _assert_ledger_ok(db, world)
    user = world.users["victim"]
    async with db.session() as s:
        await s.execute(
            text("UPDATE accounts SET balance = balance + 1000 WHERE user_id = :u"), {"u": user}
        )
    try:
        async with db.session() as s:
            check = await check_ledger(s, world.tenant_id)
        assert not check.ok
        checks = {(m["check"], m["stored"], m["recomputed"]) for m in check.mismatches}
        assert ("balance", 1040, 40) in checks
        assert ("zero_sum", 1000, 0) in checks
        assert all(m["tenant_id"] == str(world.tenant_id) for m in check.mismatches)
    finally:
        async with db.session() as s:
            await s.execute(
                text("UPDATE accounts SET balance = balance - 1000 WHERE user_id = :u"), {"u": user}
            )
    await _assert_ledger_ok(db, world)


async def test_verify_reports_a_settled_hold_edited_away_from_its_entries(db) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["payer"])
    await _recharge(db, world, "payer", 40)
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, world.users["payer"], "job-9", 10)
    async with db.session() as s:
        await holds.capture(s, world.tenant_id, "job-9", 4)
    await _assert_ledger_ok(db, world)
    flip = (
        "UPDATE holds SET status = :status, captured = :captured, released = amount - :captured"
        " WHERE tenant_id = :t AND reference = 'job-9'"
    )
    async with db.session() as s:  # balances untouched: only the hold says it was released
        await s.execute(text(flip), {"status": "released", "captured": 0, "t": world.tenant_id})
    try:
        async with db.session() as s:
            check = await check_ledger(s, world.tenant_id)
        assert [m["check"] for m in check.mismatches] == ["hold_entries"]
        detail = check.mismatches[0]["detail"]
        assert "'job-9' (released)" in detail and "(10, 0, 10, 0)" in detail
        assert "(10, 4, 6, 0)" in detail and check.mismatches[0]["account_kind"] == "user"
    finally:
        async with db.session() as s:
            await s.execute(text(flip), {"status": "captured", "captured": 4, "t": world.tenant_id})
    await _assert_ledger_ok(db, world)


async def test_open_accounts_is_idempotent(db) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["u1", "u2"])
    async with db.session() as s:
        await service.open_tenant_accounts(s, world.tenant_id)
        await service.open_user_accounts(s, world.tenant_id, list(world.users.values()))
        count = (
            await s.execute(
                text("SELECT count(*) FROM accounts WHERE tenant_id = :t"), {"t": world.tenant_id}
            )
        ).scalar_one()
    assert count == 4
    assert uuid.UUID(str(world.tenant_id))


async def test_verify_reports_entries_naming_a_missing_or_foreign_account(db) -> None:
    mine, other = await make_tenant(db), await make_tenant(db)
    await add_users(db, other, ["stranger"])
    async with db.sessionmaker() as s, s.begin():
        foreign = (
            await s.execute(
                text("SELECT id FROM accounts WHERE user_id = :u"), {"u": other.users["stranger"]}
            )
        ).scalar_one()
        issuance = (
            await s.execute(
                text("SELECT id FROM accounts WHERE tenant_id = :t AND kind = 'issuance'"),
                {"t": mine.tenant_id},
            )
        ).scalar_one()
        for to_account in (foreign, -42):
            await s.execute(
                text(
                    "INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, "
                    "amount, kind, balance_after, held_after) "
                    "VALUES (:t, :f, :to, 1, 'grant', 1, 0)"
                ),
                {"t": mine.tenant_id, "f": issuance, "to": to_account},
            )
        check = await check_ledger(s)
        bad = {
            m["account_id"]: m["detail"]
            for m in check.mismatches
            if m["check"] == "account_reference"
        }
        await s.rollback()  # the ledger refuses DELETE: never let these rows commit
    assert "another tenant" in bad[foreign] and "missing" in bad[-42]
