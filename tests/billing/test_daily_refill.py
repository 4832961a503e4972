"""The daily refill of plans' free Tokens, on an injected clock: exactly once per user and
local day whatever the runners, topped up (not accumulated), DST days, catch-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text

from app.core.db import Database
from app.tenancy import plans
from billing import daily_refill, holds, maintenance, usage
from billing.verify import check_ledger
from tests.billing.conftest import World, add_users, make_tenant


async def _plan(
    db: Database, world: World, users: list[str], *, amount: int, at: str, tz: str
) -> plans.PlanRow:
    spec = plans.check_spec(daily_free_tokens=amount, refill_time=at, timezone=tz)
    async with db.session() as s:
        _, plan, _ = await plans.put_plan(s, world.tenant_id, "daily", spec)
        await plans.assign_plans(
            s, world.tenant_id, [world.users[u] for u in users], [plan.id] * len(users)
        )
    return plan


async def _grants(db: Database, world: World) -> list[tuple[int, int, str]]:
    """(user id, amount, reference) of every grant entry of the tenant."""
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT a.user_id, e.amount, e.reference FROM ledger_entries e "
                "JOIN accounts a ON a.id = e.to_account_id "
                "WHERE e.tenant_id = :t AND e.kind = 'grant' ORDER BY e.id"
            ),
            {"t": world.tenant_id},
        )
        return [(r.user_id, r.amount, r.reference) for r in rows]


async def _balances(db: Database, world: World) -> dict[int, int]:
    async with db.session() as s:
        rows = await s.execute(
            text("SELECT user_id, balance FROM accounts WHERE tenant_id = :t AND kind = 'user'"),
            {"t": world.tenant_id},
        )
        return {r.user_id: r.balance for r in rows}


async def _verify_ok(db: Database, world: World) -> None:
    async with db.session() as s:
        result = await check_ledger(s, world.tenant_id)
        rollups = await usage.rollup_mismatches(s, world.tenant_id, 10)
    assert result.mismatches == [] and rollups == []


async def _refill(db: Database, world: World, now: datetime, **kw) -> daily_refill.Outcome:  # type: ignore[no-untyped-def]
    return await daily_refill.refill_due_plans(db, now, tenant_id=world.tenant_id, **kw)


async def _expiry_of(db: Database, user_id: int) -> list[tuple[int, datetime, str]]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT g.remaining, g.expires_at, g.label FROM token_grants g "
                "JOIN accounts a ON a.id = g.account_id "
                "WHERE a.user_id = :u AND g.status = 'active' AND g.remaining > 0 "
                "ORDER BY g.id"
            ),
            {"u": user_id},
        )
        return [(r.remaining, r.expires_at, r.label) for r in rows]


async def test_1000_users_get_exactly_5_once_with_racing_runners_and_a_restart(
    db: Database, settings
) -> None:
    """Acceptance: one refill gives each of 1,000 users exactly 5, once, although a runner
    died after two chunks (a restart: new connections) and two runners on separate
    connections then raced; the next day a user who spent 3 is topped up to 5, not 7."""
    world = await make_tenant(db)
    users = [f"u{n:04d}" for n in range(1000)]
    await add_users(db, world, users)
    plan = await _plan(db, world, users, amount=5, at="06:00", tz="Asia/Seoul")
    now = datetime(2031, 5, 10, 0, 0, tzinfo=UTC)  # 09:00 in Seoul
    day = date(2031, 5, 10)

    first = Database(settings.database_url, pool_size=2)  # the runner that dies part-way
    async with first.session() as s:
        [due] = await daily_refill.due_plans(s, now, plan_id=plan.id)
    expires = datetime(2031, 5, 10, 21, 0, tzinfo=UTC)  # 06:00 in Seoul the next day
    after = 0
    for _ in range(2):
        async with first.session() as s:
            chunk = await daily_refill.refill_chunk(s, due, day, expires, after_id=after, limit=300)
        assert chunk is not None and chunk.refilled == 300
        after = chunk.last_id
    await first.dispose()

    racers = [Database(settings.database_url, pool_size=2) for _ in range(2)]
    try:
        outcomes = await asyncio.gather(
            *(_refill(r, world, now, chunk=250, exclusive=False) for r in racers)
        )
    finally:
        for r in racers:
            await r.dispose()
    assert sum(o.users for o in outcomes) == 400  # the 600 paid before the restart aside

    grants = await _grants(db, world)
    assert len(grants) == 1000 and {g[1] for g in grants} == {5}
    assert {g[0] for g in grants} == set(world.users.values())
    assert set((await _balances(db, world)).values()) == {5}
    assert await _refill(db, world, now + timedelta(hours=3)) == daily_refill.Outcome()
    await _verify_ok(db, world)

    # The next day: u0000 spent 3 of the 5; everyone is topped up to 5.
    spender = world.users["u0000"]
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, spender, "job-spend", 3)
    async with db.session() as s:
        await holds.capture(s, world.tenant_id, "job-spend", 3)
    outcome = await _refill(db, world, now + timedelta(days=1))
    assert (outcome.users, outcome.granted, outcome.expired) == (1000, 5000, 999 * 5 + 2)
    assert set((await _balances(db, world)).values()) == {5}
    assert await _expiry_of(db, spender) == [(5, expires + timedelta(days=1), "daily:daily")]
    async with db.session() as s:
        kinds = await s.execute(
            text(
                "SELECT e.kind, e.amount FROM ledger_entries e JOIN accounts a "
                "ON a.id IN (e.from_account_id, e.to_account_id) AND a.user_id = :u "
                "WHERE e.kind IN ('grant', 'expire') ORDER BY e.id"
            ),
            {"u": spender},
        )
        assert [tuple(k) for k in kinds] == [("grant", 5), ("expire", 2), ("grant", 5)]
    await _verify_ok(db, world)
    # The usage report's granted and expired add up to the ledger's.
    await maintenance.fold_usage(db)
    async with db.session() as s:
        today = datetime.now(UTC).date()
        days = await usage.daily(
            s, world.tenant_id, today - timedelta(days=1), today + timedelta(days=1)
        )
    granted = sum(m["ledger:grant"].tokens for m in days.values() if "ledger:grant" in m)
    expired = sum(m["ledger:expire"].tokens for m in days.values() if "ledger:expire" in m)
    assert (granted, expired) == (10_000, 999 * 5 + 2)


async def test_a_spring_forward_day_refills_at_the_first_instant_after_the_gap(db) -> None:
    """New York, 02:30: on 2031-03-09 clocks go from 02:00 to 03:00, so that day's refill
    is at 03:00 EDT (07:00 UTC); the day before's grant expires then."""
    world = await make_tenant(db)
    await add_users(db, world, ["ann"])
    await _plan(db, world, ["ann"], amount=5, at="02:30", tz="America/New_York")
    ann = world.users["ann"]
    gap_end = datetime(2031, 3, 9, 7, 0, tzinfo=UTC)

    assert (await _refill(db, world, datetime(2031, 3, 8, 12, 0, tzinfo=UTC))).day == date(
        2031, 3, 8
    )
    assert await _expiry_of(db, ann) == [(5, gap_end, "daily:daily")]
    assert (await _refill(db, world, gap_end - timedelta(seconds=1))).users == 0
    outcome = await _refill(db, world, gap_end)
    assert (outcome.day, outcome.users, outcome.expired) == (date(2031, 3, 9), 1, 5)
    # 02:30 EDT the day after is 06:30 UTC.
    assert await _expiry_of(db, ann) == [
        (5, datetime(2031, 3, 10, 6, 30, tzinfo=UTC), "daily:daily")
    ]
    assert (await _balances(db, world))[ann] == 5


async def test_a_fall_back_day_refills_once_at_the_first_of_the_two_times(db) -> None:
    """New York, 01:30 happens twice on 2031-11-02 (05:30 and 06:30 UTC): one refill."""
    world = await make_tenant(db)
    await add_users(db, world, ["ann"])
    plan = await _plan(db, world, ["ann"], amount=5, at="01:30", tz="America/New_York")
    first, second = (datetime(2031, 11, 2, h, 30, tzinfo=UTC) for h in (5, 6))
    await _refill(db, world, first - timedelta(hours=12))  # the day before
    assert (await _refill(db, world, first - timedelta(seconds=1))).users == 0
    assert (await _refill(db, world, first)).day == date(2031, 11, 2)
    assert (await _refill(db, world, second)).plans == 0  # not due again
    # Even run by hand at the second 01:30, nobody is paid twice.
    async with db.session() as s:
        [due] = await daily_refill.due_plans(s, datetime(2040, 1, 1, tzinfo=UTC), plan_id=plan.id)
    assert (await daily_refill.refill_plan(db, due, second)).users == 0
    assert [g[1] for g in await _grants(db, world)] == [5, 5]
    assert await _expiry_of(db, world.users["ann"]) == [
        (5, datetime(2031, 11, 3, 6, 30, tzinfo=UTC), "daily:daily")
    ]


async def test_days_on_which_nothing_ran_are_not_paid_later(db) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["ann"])
    await _plan(db, world, ["ann"], amount=5, at="06:00", tz="Europe/Paris")
    await _refill(db, world, datetime(2031, 6, 1, 12, tzinfo=UTC))
    # Down for three days: the catch-up pays the current day only.
    outcome = await _refill(db, world, datetime(2031, 6, 4, 12, tzinfo=UTC))
    assert (outcome.day, outcome.users) == (date(2031, 6, 4), 1)
    assert [g[1] for g in await _grants(db, world)] == [5, 5]
    assert (await _balances(db, world))[world.users["ann"]] == 5
    await _verify_ok(db, world)


async def test_frozen_users_and_users_off_the_plan_get_nothing(db) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["ann", "bob", "cid"])
    await _plan(db, world, ["ann", "bob"], amount=3, at="00:00", tz="UTC")
    async with db.session() as s:
        await s.execute(
            text("UPDATE accounts SET status = 'frozen' WHERE user_id = :u"),
            {"u": world.users["bob"]},
        )
    outcome = await _refill(db, world, datetime(2031, 1, 1, 1, tzinfo=UTC))
    assert outcome.users == 1
    assert [g[0] for g in await _grants(db, world)] == [world.users["ann"]]


async def test_held_daily_tokens_are_left_for_the_job_that_holds_them(db) -> None:
    """A job holding 2 of yesterday's grant may still capture them: the refill expires the
    rest and grants 5; the capture then spends the old grant, and the user has 5."""
    world = await make_tenant(db)
    await add_users(db, world, ["ann"])
    await _plan(db, world, ["ann"], amount=5, at="00:00", tz="UTC")
    ann = world.users["ann"]
    await _refill(db, world, datetime(2031, 1, 1, 1, tzinfo=UTC))
    async with db.session() as s:
        await holds.hold(s, world.tenant_id, ann, "job-held", 2)
    outcome = await _refill(db, world, datetime(2031, 1, 2, 1, tzinfo=UTC))
    assert outcome.expired == 3
    async with db.session() as s:
        await holds.capture(s, world.tenant_id, "job-held", 2)
    assert (await _balances(db, world))[ann] == 5
    assert [lot[0] for lot in await _expiry_of(db, ann)] == [5]
    await _verify_ok(db, world)


def test_unknown_time_zones_and_bad_times_are_refused() -> None:
    for bad in ("Mars/Olympus", "", "../../etc/passwd", "America/New York"):
        try:
            plans.check_spec(daily_free_tokens=1, refill_time="06:00", timezone=bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    for bad in ("24:00", "6:00", "06:60", "06:00:00", "noon"):
        try:
            plans.check_spec(daily_free_tokens=1, refill_time=bad, timezone="UTC")
        except ValueError:
            continue
        raise AssertionError(bad)
