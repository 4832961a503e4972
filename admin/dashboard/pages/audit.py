"""Audit and integrity: /dashboard/audit (the audit log by actor, action, tenant and time,
a page at a time), the ledger and audit-chain verification, and the reports (daily usage
as a table or CSV, the ledger export as a streamed CSV).

The verification is a read: auditors may run it too. It is a POST (with the CSRF token)
because it reads the whole ledger: a link, a prefetch or a crawler must not start it.
It runs what ``GET /api/v1/admin/ledger/verify`` runs (``billing.ledger_verify``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from admin import reports
from admin import service as admin_service
from admin.dashboard.forms import text_field, utc_time
from admin.dashboard.pages.tenants import form_problem
from admin.dashboard.security import CurrentOperator, chosen_tenant
from admin.dashboard.web import PREFIX, page_router, render
from app.core.deps import MAX_ROW_ID, DBSession
from app.core.errors import AppError, InvalidCursor, InvalidDateRange, NotFound
from billing import ledger_verify
from billing.metrics import VERIFY_CHECKS

router = page_router()
PAGE = 50  # audit records per page
AUDIT = f"{PREFIX}/audit"
TENANT_CHOICES = 500
_FILTERS = ("actor", "action", "from", "to")
REPORT_DAYS = 30  # the reports' default period: the last 30 UTC days


async def _tenants(session: Any, operator: Any) -> list[Any]:
    if operator.tenant_id is not None:
        return []
    return await admin_service.list_tenants(
        session, operator.admin, after_slug=None, limit=TENANT_CHOICES
    )


def row_cursor(value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > 19 or int(value) > MAX_ROW_ID:
        raise InvalidCursor("cursor is not one this page gave")
    return int(value)


# -- the audit log ---------------------------------------------------------------------------


@router.get(AUDIT)
async def audit_page(
    request: Request, operator: CurrentOperator, session: DBSession, cursor: str = ""
) -> Response:
    """Newest first; operators of one tenant see that tenant's records only, platform
    operators every record (``?tenant=`` narrows it)."""
    tenant_id = chosen_tenant(request, operator)
    sent = {name: request.query_params.get(name, "")[:300] for name in _FILTERS}
    rows: list[dict[str, Any]] = []
    next_cursor, error, status_code = None, None, 200
    try:
        action = text_field(sent["action"], "action", max_length=64) or None
        rows, next_cursor = await admin_service.list_audit_log(
            session,
            operator.admin,
            tenant_id=tenant_id,
            action=action,
            actor=text_field(sent["actor"], "actor", max_length=320) or None,
            since=utc_time(sent["from"], "from"),
            until=utc_time(sent["to"], "to", end_of_day=True),
            before_id=row_cursor(cursor),
            limit=PAGE,
        )
    except AppError as exc:
        if not form_problem(exc):
            raise
        error, status_code = exc.message, exc.status
    query = {k: v for k, v in sent.items() if v}
    if tenant_id is not None:
        query["tenant"] = str(tenant_id)
    return render(
        request,
        "audit.html",
        status_code=status_code,
        title="Audit log",
        tenants=await _tenants(session, operator),
        tenant_id=tenant_id,
        filters=sent,
        rows=rows,
        error=error,
        next_query=urlencode({**query, "cursor": next_cursor}) if next_cursor else "",
        tenant_query=urlencode({"tenant": str(tenant_id)}) if tenant_id else "",
    )


# -- verification ----------------------------------------------------------------------------


@router.post(f"{AUDIT}/verify")
async def verify(request: Request, operator: CurrentOperator, session: DBSession) -> Response:
    """Every check of the ledger verification and the audit chain, each with its result:
    the chosen tenant's, or (platform operators, no tenant chosen) the whole ledger's."""
    tenant_id = chosen_tenant(request, operator)
    result, checked = await ledger_verify.verify_as(session, request, operator.admin, tenant_id)
    # Each ledger check by name ("other" only when a mismatch of no listed check comes
    # up); the audit chain has a row of its own, with its problem.
    counts = {check: 0 for check in VERIFY_CHECKS if check not in ("other", "audit_chain")}
    for mismatch in result.mismatches:
        check = mismatch["check"]
        counts[check] = counts.get(check, 0) + 1
    return render(
        request,
        "verify.html",
        title="Verification",
        result=result,
        counts=counts,
        tenant_id=checked,
        tenant_query=urlencode({"tenant": str(checked)}) if checked else "",
        checked_at=datetime.now(UTC),
        mismatches=result.mismatches[:100],
    )


# -- reports ---------------------------------------------------------------------------------


def _day(request: Request, name: str) -> date | None:
    value = request.query_params.get(name) or ""
    if not value:
        return None
    try:
        if len(value) != 10:  # fromisoformat also reads 20260131 or 2026-W05-6
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidDateRange(f"'{name}' must be a day: YYYY-MM-DD") from None


def _period(request: Request) -> tuple[date, date]:
    """``from`` and ``to`` (UTC days, both included); the last 30 days by default."""
    last = _day(request, "to") or datetime.now(UTC).date()
    first = _day(request, "from") or last - timedelta(days=REPORT_DAYS - 1)
    return first, last


def _report_tenant(request: Request, operator: Any) -> uuid.UUID:
    tenant_id = chosen_tenant(request, operator)
    if tenant_id is None:
        raise NotFound("Choose a tenant first")
    return tenant_id


@router.get(f"{AUDIT}/reports")
async def reports_page(request: Request, operator: CurrentOperator, session: DBSession) -> Response:
    tenant_id = chosen_tenant(request, operator)
    days: list[Any] = []
    error, status_code = None, 200
    first, last = datetime.now(UTC).date() - timedelta(days=REPORT_DAYS - 1), None
    try:
        first, last = _period(request)
        if tenant_id is not None:
            days = await reports.usage_report(session, operator.admin, tenant_id, first, last)
    except AppError as exc:
        if not form_problem(exc):
            raise
        error, status_code = exc.message, exc.status
    last = last or datetime.now(UTC).date()
    query = {"from": first.isoformat(), "to": last.isoformat()}
    if tenant_id is not None:
        query["tenant"] = str(tenant_id)
    return render(
        request,
        "reports.html",
        status_code=status_code,
        title="Reports",
        tenants=await _tenants(session, operator),
        tenant_id=tenant_id,
        first=first,
        last=last,
        days=days,
        columns=reports.USAGE_COLUMNS,
        error=error,
        download_query=urlencode(query),
    )


@router.get(f"{AUDIT}/usage.csv")
async def usage_csv(request: Request, operator: CurrentOperator, session: DBSession) -> Response:
    """The usage report as CSV, the Admin API's ``Accept: text/csv`` answer, to download."""
    tenant_id = _report_tenant(request, operator)
    first, last = _period(request)
    days = await reports.usage_report(session, operator.admin, tenant_id, first, last)
    name = f"usage-{tenant_id}-{first}-{last}.csv"
    return Response(
        reports.usage_csv(days),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(f"{AUDIT}/ledger.csv")
async def ledger_csv(
    request: Request, operator: CurrentOperator, session: DBSession
) -> StreamingResponse:
    """The ledger export (``/ledger/export``'s stream: keyset batches, one snapshot)."""
    tenant_id = _report_tenant(request, operator)
    first, last = _period(request)
    await reports.check_export(session, operator.admin, tenant_id, first, last)
    rows = reports.export_ledger(request.app.state.db, tenant_id, first, last)
    name = f"ledger-{tenant_id}-{first}-{last}.csv"
    return StreamingResponse(
        rows,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
