"""Admin use cases of plans: writing and reading a tenant's plans, putting users on them
(PATCH of a user, and the ``plan`` of imported rows), and an operator's refill now.

Each write checks the caller's reach, does its work through ``app.tenancy.plans`` and
appends one audit record last, as admin.service does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from admin import service
from app.auth.dependencies import AdminPrincipal, ensure_tenant_access
from app.core import audit
from app.core.db import Database
from app.tenancy import plans
from app.tenancy import service as tenancy
from app.tenancy.plans import PlanRow, PlanSpec
from billing import daily_refill


async def _tenant(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, *, write: bool
) -> None:
    ensure_tenant_access(admin, tenant_id, write=write)
    await tenancy.get_tenant(session, tenant_id)


async def put_plan(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    name: str,
    spec: PlanSpec,
) -> PlanRow:
    """Create the plan ``name`` or replace it whole."""
    await _tenant(session, admin, tenant_id, write=True)
    before, after, created = await plans.put_plan(session, tenant_id, name, spec)
    shown = _audited(after)
    if created:
        details: dict[str, Any] = {"plan": shown}
    else:
        old = _audited(before) if before is not None else {}
        details = {"changes": {k: {"from": old.get(k), "to": v} for k, v in _diff(old, shown)}}
    if created or details["changes"]:
        await audit.record(
            session,
            request=request,
            actor=admin,
            action="plan.create" if created else "plan.update",
            tenant_id=tenant_id,
            target=f"plan:{name}",
            details=details,
        )
    return after


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in new.items() if old.get(k) != v]


def _audited(plan: PlanRow) -> dict[str, Any]:
    shown = plan.as_dict()
    return {
        k: shown[k]
        for k in (
            "daily_free_tokens",
            "refill_time",
            "timezone",
            "rate_limit_per_second",
            "max_concurrent_jobs",
        )
    }


async def list_plans(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID
) -> list[PlanRow]:
    await _tenant(session, admin, tenant_id, write=False)
    return await plans.list_plans(session, tenant_id)


async def get_plan(
    session: AsyncSession, admin: AdminPrincipal, tenant_id: uuid.UUID, name: str
) -> PlanRow:
    await _tenant(session, admin, tenant_id, write=False)
    return await plans.require_plan(session, tenant_id, name)


async def update_user(
    session: AsyncSession,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    external_id: str,
    changes: dict[str, Any],
) -> service.UserView:
    """PATCH of a user: its plan (a name of the tenant's, or None for none), email and
    display name; what is left out stays. 404 PlanNotFound for a plan that is not there."""
    await _tenant(session, admin, tenant_id, write=True)
    user = await tenancy.get_user(session, tenant_id, external_id)
    diff: dict[str, Any] = {}
    if "plan" in changes and changes["plan"] != user.plan:
        plan_id = None
        if changes["plan"] is not None:
            plan_id = (await plans.require_plan(session, tenant_id, changes["plan"])).id
        await plans.assign_plans(session, tenant_id, [user.id], [plan_id])
        diff["plan"] = {"from": user.plan, "to": changes["plan"]}
    profile = {k: changes[k] for k in ("email", "display_name") if k in changes}
    after = await tenancy.update_user(session, user, profile)
    old = {k: getattr(user, k) for k in profile}
    diff.update({k: {"from": old[k], "to": v} for k, v in _diff(old, profile)})
    if diff:
        await audit.record(
            session,
            request=request,
            actor=admin,
            action="user.update",
            tenant_id=tenant_id,
            target=f"user:{external_id}",
            details={"changes": diff},
        )
    return await service.user_view(session, after)


async def refill_now(
    session: AsyncSession,
    db: Database,
    request: Request,
    admin: AdminPrincipal,
    tenant_id: uuid.UUID,
    name: str,
) -> tuple[PlanRow, daily_refill.Outcome]:
    """Run the plan's refill now (the current local day, to whoever has not had it)."""
    await _tenant(session, admin, tenant_id, write=True)
    plan = await plans.require_plan(session, tenant_id, name)
    due = daily_refill.DuePlan(
        plan.id,
        plan.tenant_id,
        plan.name,
        plan.daily_free_tokens,
        plan.refill_time,
        plan.timezone,
        plan.next_refill_at,
    )
    # Not exclusive: it waits for a worker refilling the plan, then pays whoever is left.
    outcome = await daily_refill.refill_plan(db, due, datetime.now(UTC), exclusive=False)
    await audit.record(
        session,
        request=request,
        actor=admin,
        action="plan.refill",
        tenant_id=tenant_id,
        target=f"plan:{name}",
        details={
            "day": outcome.day.isoformat() if outcome.day else None,
            "users_refilled": outcome.users,
            "tokens_granted": outcome.granted,
            "tokens_expired": outcome.expired,
        },
    )
    return plan, outcome
