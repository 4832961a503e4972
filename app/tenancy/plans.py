"""A tenant's plans and which users are on them: the use cases and their SQL.

A plan is written whole by name (``PUT``); its refill runs in billing
(``billing/daily_refill.py``), which reads the plans due here. Writing a plan, or putting
users on one, makes it due at once (``next_refill_at = now()``): the next upkeep round
pays the current local day to whoever on the plan has not had it yet (the refill is
exactly once per user and day whatever how often it runs), so a user who joins a plan
gets the day's free Tokens without waiting for the next morning.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import PlanNotFound
from app.tenancy import plan_schedule

PLAN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

PLAN_COLUMNS = (
    "id, tenant_id, name, daily_free_tokens, refill_time, timezone, rate_limit_per_second, "
    "max_concurrent_jobs, next_refill_at, refilled_day, created_at, updated_at"
)


@dataclass(frozen=True)
class PlanRow:
    id: int
    tenant_id: uuid.UUID
    name: str
    daily_free_tokens: int
    refill_time: time
    timezone: str
    rate_limit_per_second: int | None
    max_concurrent_jobs: int | None
    next_refill_at: datetime
    refilled_day: date | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The plan as the admin API shows it."""
        return {
            "name": self.name,
            "daily_free_tokens": self.daily_free_tokens,
            "refill_time": self.refill_time.strftime("%H:%M"),
            "timezone": self.timezone,
            "rate_limit_per_second": self.rate_limit_per_second,
            "max_concurrent_jobs": self.max_concurrent_jobs,
            "next_refill_at": self.next_refill_at,
            "refilled_day": self.refilled_day,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class PlanSpec:
    """What a ``PUT`` writes, already checked (``check_spec``)."""

    daily_free_tokens: int
    refill_time: time
    timezone: str
    rate_limit_per_second: int | None = None
    max_concurrent_jobs: int | None = None


def check_spec(
    *,
    daily_free_tokens: int,
    refill_time: str,
    timezone: str,
    rate_limit_per_second: int | None = None,
    max_concurrent_jobs: int | None = None,
) -> PlanSpec:
    """ValueError naming the field for a refill time that is not HH:MM or a time zone the
    tz database does not have."""
    plan_schedule.zone(timezone)
    return PlanSpec(
        daily_free_tokens,
        plan_schedule.parse_refill_time(refill_time),
        timezone,
        rate_limit_per_second,
        max_concurrent_jobs,
    )


_UPSERT = text(
    f"""
    INSERT INTO plans AS p (tenant_id, name, daily_free_tokens, refill_time, timezone,
                           rate_limit_per_second, max_concurrent_jobs)
    VALUES (:tenant_id, :name, :daily_free_tokens, :refill_time, :timezone, :rate, :cap)
    ON CONFLICT (tenant_id, name) DO UPDATE
    SET daily_free_tokens = EXCLUDED.daily_free_tokens,
        refill_time = EXCLUDED.refill_time,
        timezone = EXCLUDED.timezone,
        rate_limit_per_second = EXCLUDED.rate_limit_per_second,
        max_concurrent_jobs = EXCLUDED.max_concurrent_jobs,
        -- a new amount or schedule counts from the next upkeep round
        next_refill_at = CASE
            WHEN (p.daily_free_tokens, p.refill_time, p.timezone)
                 IS DISTINCT FROM (EXCLUDED.daily_free_tokens, EXCLUDED.refill_time,
                                   EXCLUDED.timezone)
            THEN LEAST(p.next_refill_at, now()) ELSE p.next_refill_at END,
        updated_at = now()
    RETURNING {PLAN_COLUMNS}, (xmax = 0) AS created
    """
)


async def put_plan(
    session: AsyncSession, tenant_id: uuid.UUID, name: str, spec: PlanSpec
) -> tuple[PlanRow | None, PlanRow, bool]:
    """(the plan before, after, whether it was created)."""
    before = await get_plan(session, tenant_id, name, lock=True)
    row = (
        await session.execute(
            _UPSERT,
            {
                "tenant_id": tenant_id,
                "name": name,
                "daily_free_tokens": spec.daily_free_tokens,
                "refill_time": spec.refill_time,
                "timezone": spec.timezone,
                "rate": spec.rate_limit_per_second,
                "cap": spec.max_concurrent_jobs,
            },
        )
    ).one()
    return before, PlanRow(*row[:-1]), bool(row.created)


async def get_plan(
    session: AsyncSession, tenant_id: uuid.UUID, name: str, *, lock: bool = False
) -> PlanRow | None:
    row = (
        await session.execute(
            text(
                f"SELECT {PLAN_COLUMNS} FROM plans WHERE tenant_id = :tenant_id AND name = :name"
                + (" FOR UPDATE" if lock else "")
            ),
            {"tenant_id": tenant_id, "name": name},
        )
    ).one_or_none()
    return PlanRow(*row) if row else None


async def require_plan(session: AsyncSession, tenant_id: uuid.UUID, name: str) -> PlanRow:
    plan = await get_plan(session, tenant_id, name)
    if plan is None:
        raise PlanNotFound(f"The tenant has no plan named '{name[:80]}'")
    return plan


async def list_plans(session: AsyncSession, tenant_id: uuid.UUID) -> list[PlanRow]:
    rows = await session.execute(
        text(f"SELECT {PLAN_COLUMNS} FROM plans WHERE tenant_id = :tenant_id ORDER BY name"),
        {"tenant_id": tenant_id},
    )
    return [PlanRow(*r) for r in rows]


async def plan_ids_by_name(
    session: AsyncSession, tenant_id: uuid.UUID, names: Sequence[str]
) -> dict[str, int]:
    """name -> id of the tenant's plans among ``names``."""
    if not names:
        return {}
    rows = await session.execute(
        text(
            "SELECT name, id FROM plans WHERE tenant_id = :tenant_id "
            "AND name = ANY(CAST(:names AS text[]))"
        ),
        {"tenant_id": tenant_id, "names": sorted(set(names))},
    )
    return {r.name: r.id for r in rows}


_ASSIGN = text(
    """
    WITH moved AS (
        UPDATE users u SET plan_id = x.plan_id
        FROM unnest(CAST(:user_ids AS bigint[]), CAST(:plan_ids AS bigint[])) AS x(user_id, plan_id)
        WHERE u.id = x.user_id AND u.tenant_id = :tenant_id
          AND u.plan_id IS DISTINCT FROM x.plan_id
        RETURNING u.plan_id
    )
    UPDATE plans p SET next_refill_at = now()
    WHERE p.id IN (SELECT DISTINCT plan_id FROM moved WHERE plan_id IS NOT NULL)
      AND p.next_refill_at > now()
    """
)


async def assign_by_external_id(
    session: AsyncSession, tenant_id: uuid.UUID, wanted: dict[str, int]
) -> None:
    """Put users (external id -> plan id) on their plans; unknown ids are skipped."""
    if not wanted:
        return
    rows = await session.execute(
        text(
            "SELECT external_id, id FROM users WHERE tenant_id = :tenant_id "
            "AND external_id = ANY(CAST(:ids AS text[]))"
        ),
        {"tenant_id": tenant_id, "ids": list(wanted)},
    )
    pairs = sorted((r.id, wanted[r.external_id]) for r in rows)
    await assign_plans(session, tenant_id, [p[0] for p in pairs], [p[1] for p in pairs])


async def assign_plans(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_ids: Sequence[int],
    plan_ids: Sequence[int | None],
) -> None:
    """Put each user on its plan (None: off any plan), in one statement; the plans that
    gained users become due, so that those get the current day's grant."""
    if user_ids:
        await session.execute(
            _ASSIGN,
            {"tenant_id": tenant_id, "user_ids": list(user_ids), "plan_ids": list(plan_ids)},
        )
