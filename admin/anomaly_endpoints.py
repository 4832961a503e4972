"""Routes of the anomaly rules and their review queue (/api/v1/admin): a tenant's rules
(GET, PUT), its flags (GET) and a flag's resolution (POST). ``app.jobs.anomaly.service``
does the work; the swap path's check is ``app.jobs.anomaly.check``."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Depends, Path, Query, Request

from app.auth.dependencies import ADMIN_AUTH_ERRORS, CurrentAdmin, admin_ip_allowed
from app.core.deps import IdCursor, RedisDep
from app.core.errors import (
    Conflict,
    DocumentedRouter,
    InvalidAmount,
    InvalidCursor,
    InvalidText,
    MalformedJSON,
    NotFound,
    ServiceUnavailable,
    ValidationError,
    error_responses,
)
from app.jobs.anomaly import schemas, service

router = DocumentedRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=ADMIN_AUTH_ERRORS,
)


def _rules_out(tenant_id: uuid.UUID, row: object | None) -> schemas.RulesOut:
    if row is None:
        return schemas.RulesOut(tenant_id=tenant_id)
    return schemas.RulesOut.model_validate(row, from_attributes=True)


@router.get(
    "/tenants/{tenant_id}/anomaly-rules",
    response_model=schemas.RulesOut,
    responses=error_responses(NotFound),
)
async def get_anomaly_rules(
    tenant_id: uuid.UUID, request: Request, admin: CurrentAdmin
) -> schemas.RulesOut:
    """The tenant's anomaly rules (every limit null and version 0 while never set)."""
    row = await service.get_rules(request.app.state.db, admin, tenant_id)
    return _rules_out(tenant_id, row)


@router.put(
    "/tenants/{tenant_id}/anomaly-rules",
    response_model=schemas.RulesOut,
    # ValidationError: a limit under 1 or not an integer, an unknown action or field;
    # InvalidAmount: max_tokens_per_day under 1 or not an integer; ServiceUnavailable:
    # saved, but Redis did not take them (send it again).
    responses=error_responses(
        NotFound, MalformedJSON, ValidationError, InvalidAmount, ServiceUnavailable
    ),
)
async def put_anomaly_rules(
    tenant_id: uuid.UUID,
    body: schemas.RulesIn,
    request: Request,
    admin: CurrentAdmin,
    redis: RedisDep,
) -> schemas.RulesOut:
    """Replace the tenant's anomaly rules (a limit left out is off), checked on every
    swap from the next one on. Audited."""
    row = await service.put_rules(
        request.app.state.db, redis, request, admin, tenant_id, body.model_dump()
    )
    return _rules_out(tenant_id, row)


@router.get(
    "/tenants/{tenant_id}/flags",
    response_model=schemas.FlagPage,
    responses=error_responses(NotFound, InvalidCursor, InvalidText),
)
async def list_flags(
    tenant_id: uuid.UUID,
    request: Request,
    admin: CurrentAdmin,
    cursor: IdCursor,
    status: Literal["open", "resolved"] | None = None,
    user: Annotated[str | None, Query(max_length=255, description="a user's external_id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> schemas.FlagPage:
    """The review queue: the tenant's flags, newest first (``status=open`` for those
    waiting for a review)."""
    rows = await service.list_flags(
        request.app.state.db,
        admin,
        tenant_id,
        status=status,
        user=user,
        before_id=cursor,
        limit=limit + 1,
    )
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return schemas.FlagPage(
        items=[schemas.flag_out(r) for r in rows[:limit]], next_cursor=next_cursor
    )


@router.post(
    "/tenants/{tenant_id}/flags/{flag_id}/resolve",
    response_model=schemas.FlagOut,
    # Conflict: the flag is resolved already; ValidationError: an unknown action.
    responses=error_responses(NotFound, MalformedJSON, Conflict, ValidationError, InvalidText),
)
async def resolve_flag(
    tenant_id: uuid.UUID,
    flag_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: schemas.ResolveIn,
    request: Request,
    admin: CurrentAdmin,
    redis: RedisDep,
) -> schemas.FlagOut:
    """Close an open flag: ``unfreeze`` (the user may swap again, their counts start
    afresh, their other open flags close) or ``keep_frozen``. Audited."""
    row = await service.resolve_flag(
        request.app.state.db,
        redis,
        request,
        admin,
        tenant_id,
        flag_id,
        action=body.action,
        note=body.note,
    )
    return schemas.flag_out(row)
