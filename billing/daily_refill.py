"""The daily refill of plans' free Tokens: at each plan's local refill time, every active
user on the plan gets a daily grant topped up to the plan's amount, expiring at the next
refill (CONTRACT.md, "Plans (per tenant)").

How it is paid (SQL in ``billing/refill_repository.py``):

- Top-up, not accumulation: what is left of the user's daily grant expires at the refill
  (an ``expire`` entry, as any grant's expiry) and a fresh grant of the plan's amount is
  credited (a ``grant`` entry and its lot, labelled ``daily:<plan>``, expiring at the next
  refill). A user who spent 3 of yesterday's 5 sees ``expire 2`` and ``grant 5``: 5 again.
- Exactly once per user and local day: the grant's UPDATE of the account advances
  ``accounts.daily_refill_day`` only while it is before the day, re-checked under the
  account's lock, and the entry's key ``daily:<day>:<account>`` is unique in the ledger.
  Any number of runners (workers, restarts part-way, the operator's trigger) pay a user
  at most once a day; a runner that stops part-way leaves the rest for the next one.
- A day on which nothing ran is not paid later: a runner pays only the *current* refill
  day (the latest whose refill time has come), whatever it missed.
- Set-based: a plan's users are paid in chunks of ``CHUNK`` accounts, one transaction and
  three statements each (whatever the chunk's size), in account id order.
- Who: users on the plan whose account is active (frozen ones are skipped, and get the
  next day's grant once unfrozen), in tenants that are active.

When: ``plans.next_refill_at``. The workers' housekeeping (``refill_due_plans``) runs the
plans whose time has come, then sets it to the next refill instant. Writing a plan or
putting users on it sets it to now, so that newcomers get the current day's grant at once.
"""

from __future__ import annotations

import logging
import time as clock
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Database
from app.tenancy import plan_schedule
from billing import metrics
from billing import refill_repository as sql
from billing import repository as repo
from billing.bulk_repository import driver_connection

log = logging.getLogger(__name__)

CHUNK = 10_000  # accounts per transaction
MAX_PLANS_PER_ROUND = 100


@dataclass(frozen=True)
class DuePlan:
    id: int
    tenant_id: uuid.UUID
    name: str
    daily_free_tokens: int
    refill_time: time
    timezone: str
    next_refill_at: datetime

    @property
    def label(self) -> str:
        return f"daily:{self.name}"[:100]


@dataclass(frozen=True)
class Chunk:
    """What one chunk did: ``candidates`` users picked (``CHUNK`` of them: maybe more to do)."""

    candidates: int
    last_id: int
    refilled: int
    granted: int
    expired: int


@dataclass
class Outcome:
    """A plan's refill, or a round's (``plans`` refilled to the end)."""

    day: date | None = None
    plans: int = 0
    users: int = 0
    granted: int = 0
    expired: int = 0
    busy: bool = False

    def add(self, other: Outcome) -> None:
        self.day = other.day or self.day  # a round's: the last plan's
        self.plans += other.plans
        self.users += other.users
        self.granted += other.granted
        self.expired += other.expired


async def due_plans(
    session: AsyncSession,
    now: datetime,
    *,
    tenant_id: uuid.UUID | None = None,
    plan_id: int | None = None,
    limit: int = MAX_PLANS_PER_ROUND,
) -> list[DuePlan]:
    rows = await session.execute(
        sql.DUE_PLANS, {"now": now, "tenant_id": tenant_id, "plan_id": plan_id, "limit": limit}
    )
    return [DuePlan(*r) for r in rows]


async def refill_chunk(
    session: AsyncSession,
    plan: DuePlan,
    day: date,
    expires_at: datetime,
    *,
    after_id: int = 0,
    limit: int = CHUNK,
    exclusive: bool = True,
) -> Chunk | None:
    """Refill the next ``limit`` users of ``plan`` (account ids past ``after_id``) not
    refilled for ``day`` yet, in the session's transaction. None when ``exclusive`` and
    another runner holds the plan (it does the work)."""
    driver = await driver_connection(session)
    if exclusive and not await driver.fetchval(sql.PLAN_LOCK, plan.id):
        return None
    expiry = await driver.fetchrow(sql.REFILL_EXPIRE, plan.id, day, after_id, limit)
    chunk = Chunk(int(expiry["candidates"]), int(expiry["last_id"] or after_id), 0, 0, 0)
    accounts = list(expiry["accounts"])
    expired = int(expiry["expired"])
    if expired:
        metrics.tokens_moved(session, plan.tenant_id, "expire", expired)
    if not accounts:
        return Chunk(chunk.candidates, chunk.last_id, 0, 0, expired)
    issuance = await driver.fetchval(sql.ISSUANCE_ACCOUNT, plan.tenant_id)
    if issuance is None:
        await repo.open_tenant_accounts(session, plan.tenant_id)
        issuance = await driver.fetchval(sql.ISSUANCE_ACCOUNT, plan.tenant_id)
    row = await driver.fetchrow(
        sql.REFILL_GRANT,
        accounts,
        plan.id,
        day,
        plan.daily_free_tokens,
        plan.tenant_id,
        issuance,
        expires_at,
        plan.label,
        f"plan:{plan.name}:{day.isoformat()}"[:255],
        f"daily:{day.isoformat()}:",
    )
    granted = int(row["granted"])
    metrics.tokens_moved(session, plan.tenant_id, "grant", granted)
    metrics.refilled(session, int(row["refilled"]), granted)
    return Chunk(chunk.candidates, chunk.last_id, int(row["refilled"]), granted, expired)


async def refill_plan(
    db: Database,
    plan: DuePlan,
    now: datetime,
    *,
    chunk: int = CHUNK,
    exclusive: bool = True,
) -> Outcome:
    """Pay ``plan``'s current refill day (as of ``now``) to its users not paid yet, chunk
    after chunk (a transaction each), then schedule its next refill."""
    started = clock.perf_counter()
    tz = plan_schedule.zone(plan.timezone)
    day = plan_schedule.refill_day_at(now, plan.refill_time, tz)
    expires_at = plan_schedule.next_refill_after(day, plan.refill_time, tz)
    outcome = Outcome(day=day)
    after_id = 0
    while True:
        async with db.session() as session:
            done = await refill_chunk(
                session, plan, day, expires_at, after_id=after_id, limit=chunk, exclusive=exclusive
            )
        if done is None:
            outcome.busy = True
            return outcome
        outcome.users += done.refilled
        outcome.granted += done.granted
        outcome.expired += done.expired
        if done.candidates < chunk:
            break
        after_id = done.last_id
    async with db.session() as session:
        await session.execute(
            sql.PLAN_DONE,
            {
                "plan_id": plan.id,
                "day": day,
                "next_refill_at": expires_at,
                "seen": plan.next_refill_at,
            },
        )
        metrics.refill_run(session, clock.perf_counter() - started)
    outcome.plans = 1
    if outcome.users:
        log.info(
            "plan %s (tenant %s): day %s paid to %d users (%d Tokens granted, %d expired)",
            plan.name,
            plan.tenant_id,
            day,
            outcome.users,
            outcome.granted,
            outcome.expired,
        )
    return outcome


async def refill_due_plans(
    db: Database,
    now: datetime | None = None,
    *,
    tenant_id: uuid.UUID | None = None,
    plan_id: int | None = None,
    chunk: int = CHUNK,
    exclusive: bool = True,
) -> Outcome:
    """One round: refill every plan whose refill time has come by ``now`` (the clock by
    default), or only ``tenant_id``'s / ``plan_id``. A plan that fails is logged and
    left due (the next round retries it); the others go on."""
    now = now or datetime.now(UTC)
    async with db.session() as session:
        plans = await due_plans(session, now, tenant_id=tenant_id, plan_id=plan_id)
    total = Outcome()
    for plan in plans:
        try:
            total.add(await refill_plan(db, plan, now, chunk=chunk, exclusive=exclusive))
        except Exception:  # noqa: BLE001 - one plan's trouble must not stop the others
            log.exception("daily refill of plan %s (tenant %s) failed", plan.name, plan.tenant_id)
            metrics.refill_failed()
    return total
