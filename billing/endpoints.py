"""Routes of the billing API: bulk recharge and ledger verification (admins), balance,
ledger and pricing (end users). Routes only parse, call the billing services and shape
the response.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import orjson
from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse

from app.auth.dependencies import (
    ADMIN_AUTH_ERRORS,
    API_KEY_AUTH_ERRORS,
    CurrentAdmin,
    CurrentApiUser,
    ensure_tenant_access,
)
from app.core.deps import DBSession, IdCursor, SettingsDep
from app.core.errors import (
    DocumentedRouter,
    ErrorClass,
    InvalidAmount,
    InvalidCursor,
    InvalidText,
    MalformedJSON,
    NotFound,
    TooManyEntries,
    ValidationError,
    error_responses,
    merge_responses,
)
from app.core.errors.openapi import Responses
from app.core.idempotency.service import KEYED_WRITE_ERRORS, run_idempotent
from billing import bulk_entries, bulk_recharge, ledger_verify, schemas, service, user_ledger

# Admin and end-user routes side by side: each route declares its authentication's errors.
router = DocumentedRouter(prefix="/api/v1", tags=["billing"])


def _admin_errors(*errors: ErrorClass) -> Responses:
    return merge_responses(ADMIN_AUTH_ERRORS, error_responses(*errors))


def _user_errors(*errors: ErrorClass) -> Responses:
    return merge_responses(API_KEY_AUTH_ERRORS, error_responses(*errors))


_BULK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": schemas.inline_schema(schemas.BulkRechargeRequest)}
        },
    }
}


def _parse_json(raw: bytes) -> Any:
    """orjson first (fast); the standard library for what orjson refuses but Python reads
    as a number (``1e400``), so that one absurd amount is an entry error, not a 400."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedJSON(f"The body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# -- bulk recharge (admins) ----------------------------------------------------------------


@router.post(
    "/admin/tenants/{tenant_id}/recharges/bulk",
    response_model=schemas.BatchReportOut,
    openapi_extra=_BULK_BODY,
    tags=["admin"],
    # InvalidAmount: the shared amount, or a credit past the largest storable balance.
    responses=_admin_errors(
        NotFound,
        MalformedJSON,
        ValidationError,
        TooManyEntries,
        InvalidAmount,
        InvalidText,
        *KEYED_WRITE_ERRORS,
    ),
)
async def bulk_recharge_endpoint(
    tenant_id: uuid.UUID,
    request: Request,
    session: DBSession,
    settings: SettingsDep,
    admin: CurrentAdmin,
) -> Response:
    """Credit up to 10,000 users in one transaction. Bad entries are reported in
    ``failed_users`` (soft mode) or reject the batch (atomic mode). Honours Idempotency-Key,
    for good: a batch replayed with its key, however late, answers its first report.
    """
    ensure_tenant_access(admin, tenant_id, write=True)
    bulk = bulk_entries.parse_bulk_request(
        _parse_json(await request.body()),
        max_entries=settings.bulk_max_entries,
        max_amount=settings.max_amount,
    )

    async def operation() -> tuple[int, dict[str, Any]]:
        report = await bulk_recharge.submit_as(
            session, request, admin, tenant_id, bulk, max_amount=settings.max_amount
        )
        return 200, report.as_dict()

    return await run_idempotent(
        session, request, scope=f"tenant:{tenant_id}", operation=operation, permanent=True
    )


@router.post(
    "/admin/tenants/{tenant_id}/recharges/bulk/preview",
    response_model=schemas.BatchPreviewOut,
    openapi_extra=_BULK_BODY,
    tags=["admin"],
    # The envelope's errors, as for a real batch (InvalidAmount: the shared amount).
    responses=_admin_errors(
        NotFound, MalformedJSON, ValidationError, TooManyEntries, InvalidAmount, InvalidText
    ),
)
async def bulk_recharge_preview_endpoint(
    tenant_id: uuid.UUID,
    request: Request,
    session: DBSession,
    settings: SettingsDep,
    admin: CurrentAdmin,
) -> Response:
    """Check a bulk recharge body as a soft batch would (entry rules, unknown and frozen
    users) and report what it would apply, applying and storing nothing. Read-only, so
    auditors may call it too; no Idempotency-Key needed."""
    ensure_tenant_access(admin, tenant_id, write=False)
    bulk = bulk_entries.parse_bulk_request(
        _parse_json(await request.body()),
        max_entries=settings.bulk_max_entries,
        max_amount=settings.max_amount,
    )
    report = await bulk_recharge.preview(session, tenant_id, bulk, max_amount=settings.max_amount)
    return JSONResponse(report)


@router.post(
    "/admin/tenants/{tenant_id}/recharges/{batch_id}/approve",
    response_model=schemas.BatchReportOut,
    tags=["admin"],
    # Forbidden (approving one's own batch) is among the authentication's 403s; Conflict:
    # a rejected batch; InvalidAmount: a credit past the largest storable balance.
    responses=_admin_errors(NotFound, InvalidAmount, *KEYED_WRITE_ERRORS),
)
async def approve_batch_endpoint(
    tenant_id: uuid.UUID,
    batch_id: uuid.UUID,
    request: Request,
    session: DBSession,
    admin: CurrentAdmin,
) -> Response:
    """Apply a batch waiting for approval; only an admin other than its sender may.
    Approving an applied batch again returns its report unchanged; a rejected one is 409
    Conflict."""
    ensure_tenant_access(admin, tenant_id, write=True)

    async def operation() -> tuple[int, dict[str, Any]]:
        report = await bulk_recharge.approve_as(session, request, admin, tenant_id, batch_id)
        return 200, report.as_dict()

    return await run_idempotent(session, request, scope=f"tenant:{tenant_id}", operation=operation)


@router.get(
    "/admin/tenants/{tenant_id}/recharges/{batch_id}",
    response_model=schemas.BatchReportOut,
    tags=["admin"],
    responses=_admin_errors(NotFound),
)
async def get_batch_endpoint(
    tenant_id: uuid.UUID, batch_id: uuid.UUID, session: DBSession, admin: CurrentAdmin
) -> Response:
    """The report of one bulk recharge."""
    ensure_tenant_access(admin, tenant_id, write=False)
    report = await bulk_recharge.get_batch(session, tenant_id, batch_id)
    # The very bytes the POST answered (same encoder), not a re-serialisation.
    return JSONResponse(report.as_dict())


# -- verification (admins) -----------------------------------------------------------------


@router.get(
    "/admin/ledger/verify",
    response_model=schemas.LedgerVerifyOut,
    tags=["admin"],
    responses=_admin_errors(NotFound),  # a tenant_id outside the admin's reach
)
async def verify_ledger_endpoint(
    request: Request, session: DBSession, admin: CurrentAdmin, tenant_id: uuid.UUID | None = None
) -> schemas.LedgerVerifyOut:
    """Recompute every balance and held from the ledger entries, check that each tenant's
    accounts sum to zero, that every hold is what its entries moved and every metered job
    what its hold says, and that the audit chain is intact. Admins bound to a tenant check
    that tenant only."""
    result, tenant_id = await ledger_verify.verify_as(session, request, admin, tenant_id)
    return schemas.LedgerVerifyOut(
        ok=result.ok,
        accounts_checked=result.accounts_checked,
        mismatches=[schemas.MismatchOut(**m) for m in result.mismatches],
        audit_chain_ok=result.audit_chain_ok,
        audit_chain_problem=result.audit_chain_problem,
        tenant_id=tenant_id,
    )


# -- end users (API key) -------------------------------------------------------------------


@router.get(
    "/balance",
    response_model=schemas.BalanceOut,
    responses=_user_errors(NotFound),  # a user without a Token account
)
async def balance_endpoint(session: DBSession, user: CurrentApiUser) -> schemas.BalanceOut:
    """Your Tokens: ``available = balance - held`` (held: reserved by running jobs)."""
    view = await service.account_view(session, user.user_id)
    return schemas.BalanceOut(
        balance=view.balance,
        held=view.held,
        available=view.available,
        expiring=[schemas.ExpiringOut(**lot.as_dict()) for lot in view.expiring],
    )


@router.get("/ledger", response_model=schemas.LedgerPage, responses=_user_errors(InvalidCursor))
async def ledger_endpoint(
    session: DBSession,
    user: CurrentApiUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: IdCursor = None,
) -> schemas.LedgerPage:
    """Your Token movements, newest first; pass ``next_cursor`` back for the next page."""
    found = await user_ledger.page(session, user.user_id, before=cursor, limit=limit)
    return schemas.LedgerPage(
        items=[schemas.LedgerItemOut(**vars(line)) for line in found.items],
        next_cursor=found.next_cursor,
    )


# GET /pricing: billing/pricing_endpoints.py (versioned per-tenant price books).
