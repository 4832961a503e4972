"""Routes of the operators' corrections (/api/v1/admin): a signed adjustment of a user's
Tokens and the refund of a job's charge. Both are keyed writes (Idempotency-Key) that
answer 201 with the ledger entry; admin.corrections does the work."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Depends, Request, Response

from admin import corrections, schemas
from app.auth.dependencies import ADMIN_AUTH_ERRORS, CurrentAdmin, admin_ip_allowed
from app.core.deps import DBSession
from app.core.errors import (
    AccountFrozen,
    DocumentedRouter,
    InsufficientBalance,
    InvalidAmount,
    InvalidText,
    NotFound,
    UserNotFound,
    error_responses,
)
from app.core.idempotency.service import KEYED_WRITE_ERRORS, request_key, run_idempotent

router = DocumentedRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=ADMIN_AUTH_ERRORS,
)


@router.post(
    "/tenants/{tenant_id}/users/{external_id}/adjustments",
    status_code=201,
    response_model=schemas.EntryOut,
    # InvalidAmount: 0, or past the largest amount; AccountFrozen: a frozen account takes
    # no adjustment of either sign; InsufficientBalance: a debit past what is available.
    responses=error_responses(
        NotFound,
        UserNotFound,
        InvalidAmount,
        AccountFrozen,
        InsufficientBalance,
        InvalidText,
        *KEYED_WRITE_ERRORS,
    ),
)
async def adjust_user(
    tenant_id: uuid.UUID,
    external_id: str,
    body: schemas.AdjustmentRequest,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> Response:
    """Correct a user's Tokens by a signed amount, with a reason: one `adjustment` entry
    and an audit record. Honours Idempotency-Key."""

    async def operation() -> tuple[int, dict[str, Any]]:
        entry = await corrections.adjust_user(
            session,
            request,
            admin,
            tenant_id,
            external_id,
            amount=body.amount,
            reason=body.reason,
            request_key=request_key(request),
        )
        return 201, entry

    return await run_idempotent(session, request, scope=f"tenant:{tenant_id}", operation=operation)


@router.post(
    "/tenants/{tenant_id}/jobs/{job_id}/refund",
    status_code=201,
    response_model=schemas.EntryOut,
    # InvalidAmount: more than the job's charge left to refund (or under 1); Conflict: the
    # job was not charged (running, failed, canceled, not metered), or a keyed-write clash.
    responses=error_responses(NotFound, InvalidAmount, InvalidText, *KEYED_WRITE_ERRORS),
)
async def refund_job(
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    body: schemas.RefundRequest,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> Response:
    """Give back Tokens a job was charged (default: all of it not refunded yet), with a
    reason: one `refund` entry and an audit record. Never more than charged minus
    refunded. Honours Idempotency-Key."""

    async def operation() -> tuple[int, dict[str, Any]]:
        entry = await corrections.refund_job(
            session,
            request,
            admin,
            tenant_id,
            job_id,
            amount=body.amount,
            reason=body.reason,
            request_key=request_key(request),
        )
        return 201, entry

    return await run_idempotent(session, request, scope=f"tenant:{tenant_id}", operation=operation)
