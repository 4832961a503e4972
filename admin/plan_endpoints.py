"""Routes of plans (/api/v1/admin/tenants/{tenant_id}/plans) and of a user's changes
(PATCH /users/{external_id}: plan, email, display name); admin.plans does the work."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response

from admin import plans, schemas
from app.auth.dependencies import (
    ADMIN_AUTH_ERRORS,
    CurrentAdmin,
    admin_ip_allowed,
    ensure_tenant_access,
)
from app.core.deps import DBSession
from app.core.errors import (
    DocumentedRouter,
    InvalidAmount,
    InvalidDisplayName,
    InvalidEmail,
    InvalidText,
    NotFound,
    PlanNotFound,
    UserNotFound,
    error_responses,
)
from app.core.idempotency.service import KEYED_WRITE_ERRORS, run_idempotent
from app.tenancy.plans import PLAN_NAME_PATTERN, PlanRow, check_spec

router = DocumentedRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=ADMIN_AUTH_ERRORS,
)

PlanName = Annotated[
    str, Path(pattern=PLAN_NAME_PATTERN, max_length=64, description="1-64 of A-Z a-z 0-9 _ . -")
]


def _plan_out(plan: PlanRow) -> dict[str, Any]:
    return schemas.PlanOut(**plan.as_dict()).model_dump(mode="json")


@router.put(
    "/tenants/{tenant_id}/plans/{name}",
    response_model=schemas.PlanOut,
    # InvalidAmount: daily_free_tokens not an integer from 0 to 10^9. A refill_time that is
    # not HH:MM or a time zone the tz database lacks is 422 ValidationError.
    responses=error_responses(NotFound, InvalidAmount, *KEYED_WRITE_ERRORS),
)
async def put_plan(
    tenant_id: uuid.UUID,
    name: PlanName,
    body: schemas.PlanIn,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> Response:
    """Create or replace the plan ``name``: each day at ``refill_time`` in ``timezone``,
    its users' daily grant is topped up to ``daily_free_tokens``. A new plan, or a new
    amount or schedule, takes effect at the workers' next round (a user paid for the
    local day already is not paid again). Honours Idempotency-Key."""
    ensure_tenant_access(admin, tenant_id, write=True)  # before a replay is answered
    spec = check_spec(**body.model_dump())

    async def operation() -> tuple[int, dict[str, Any]]:
        plan = await plans.put_plan(session, request, admin, tenant_id, name, spec)
        return 200, _plan_out(plan)

    return await run_idempotent(session, request, scope=f"tenant:{tenant_id}", operation=operation)


@router.get(
    "/tenants/{tenant_id}/plans",
    response_model=schemas.PlanList,
    responses=error_responses(NotFound),
)
async def list_plans(tenant_id: uuid.UUID, session: DBSession, admin: CurrentAdmin) -> Any:
    """The tenant's plans, by name."""
    rows = await plans.list_plans(session, admin, tenant_id)
    return {"items": [_plan_out(p) for p in rows]}


@router.get(
    "/tenants/{tenant_id}/plans/{name}",
    response_model=schemas.PlanOut,
    responses=error_responses(NotFound, PlanNotFound),
)
async def get_plan(
    tenant_id: uuid.UUID, name: PlanName, session: DBSession, admin: CurrentAdmin
) -> Any:
    return _plan_out(await plans.get_plan(session, admin, tenant_id, name))


@router.post(
    "/tenants/{tenant_id}/plans/{name}/refill",
    response_model=schemas.RefillOut,
    responses=error_responses(NotFound, PlanNotFound, *KEYED_WRITE_ERRORS),
)
async def refill_plan(
    tenant_id: uuid.UUID,
    name: PlanName,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> Response:
    """Run the plan's refill now, as the workers do at its refill time: the current local
    day's grant to each user on the plan who has not had it (never twice a day).
    Honours Idempotency-Key."""
    ensure_tenant_access(admin, tenant_id, write=True)

    async def operation() -> tuple[int, dict[str, Any]]:
        plan, outcome = await plans.refill_now(
            session, request.app.state.db, request, admin, tenant_id, name
        )
        return 200, {
            "plan": plan.name,
            "day": outcome.day,
            "users_refilled": outcome.users,
            "tokens_granted": outcome.granted,
            "tokens_expired": outcome.expired,
        }

    return await run_idempotent(session, request, scope=f"tenant:{tenant_id}", operation=operation)


@router.patch(
    "/tenants/{tenant_id}/users/{external_id}",
    response_model=schemas.UserOut,
    responses=error_responses(
        NotFound, UserNotFound, PlanNotFound, InvalidEmail, InvalidDisplayName, InvalidText
    ),
)
async def update_user(
    tenant_id: uuid.UUID,
    external_id: str,
    body: schemas.UserUpdate,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> schemas.UserOut:
    """Change a user's plan (a plan of the tenant, or null for none: 404 PlanNotFound for
    a name it has not), email or display name (null clears them); fields left out stay.
    A user put on a plan gets the current day's grant at the workers' next round."""
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    view = await plans.update_user(session, request, admin, tenant_id, external_id, changes)
    return schemas.UserOut(**vars(view))
