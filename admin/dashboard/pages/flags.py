"""Anomaly flags: /dashboard/flags, a tenant's review queue (open or resolved flags, by
user, newest first, a page at a time), and a flag's resolution (unfreeze, or keep the
user frozen, with a note).

It calls what the Admin API's flag routes call (``app.jobs.anomaly.service``: its
``list_flags`` on the flags' tenant indexes, its ``resolve_flag``, audited as
``anomaly.resolve``). Auditors read the queue and get no resolve form.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from admin import service as admin_service
from admin.dashboard.forms import checked, text_field
from admin.dashboard.pages.audit import row_cursor
from admin.dashboard.pages.tenants import form_problem
from admin.dashboard.pages.users import user_url
from admin.dashboard.security import (
    CurrentOperator,
    Operator,
    WriteOperator,
    chosen_tenant,
    require_write,
)
from admin.dashboard.web import FLASHES, PREFIX, page_router, render, see_other
from app.core.deps import DBSession, RedisDep
from app.core.errors import AppError, BadRequest, NotFound
from app.jobs.anomaly import schemas
from app.jobs.anomaly import service as anomaly

router = page_router()
PAGE = 50  # flags per page
FLAGS = f"{PREFIX}/flags"
TENANT_CHOICES = 500
STATUSES = ("open", "resolved")
ACTIONS = {"unfreeze": "Unfreeze", "keep_frozen": "Keep frozen"}
_FILTERS = ("status", "user")

FLASHES.update(
    {
        "flag-unfreeze": "Flag resolved: the user is active again, their open flags closed.",
        "flag-keep_frozen": "Flag resolved: the user stays frozen.",
    }
)


def flags_url(tenant_id: uuid.UUID, **query: str) -> str:
    return f"{FLAGS}?{urlencode({'tenant': str(tenant_id), **query})}"


@router.get(FLAGS)
async def flags_page(
    request: Request, operator: CurrentOperator, session: DBSession, cursor: str = ""
) -> Response:
    return await _flags_page(request, operator, session, cursor=cursor)


async def _flags_page(
    request: Request,
    operator: Operator,
    session: AsyncSession,
    *,
    cursor: str = "",
    status_code: int = 200,
    error: str | None = None,
) -> Response:
    tenant_id = chosen_tenant(request, operator)
    sent = {name: request.query_params.get(name, "")[:300] for name in _FILTERS}
    rows: list[Any] = []
    next_cursor = None
    if tenant_id is not None:
        try:
            if sent["status"] and sent["status"] not in STATUSES:
                raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
            rows = await anomaly.list_flags(
                request.app.state.db,
                operator.admin,
                tenant_id,
                status=sent["status"] or None,
                user=text_field(sent["user"], "user", max_length=255) or None,
                before_id=row_cursor(cursor),
                limit=PAGE + 1,
            )
        except AppError as exc:
            if not form_problem(exc):
                raise
            error, status_code = error or exc.message, exc.status
        if len(rows) > PAGE:
            rows, next_cursor = rows[:PAGE], str(rows[PAGE - 1].id)
    query = {k: v for k, v in sent.items() if v}
    tenants = []
    if operator.tenant_id is None:
        tenants = await admin_service.list_tenants(
            session, operator.admin, after_slug=None, limit=TENANT_CHOICES
        )
    return render(
        request,
        "flags.html",
        status_code=status_code,
        title="Anomaly flags",
        tenants=tenants,
        tenant_id=tenant_id,
        filters=sent,
        statuses=STATUSES,
        actions=ACTIONS,
        user_url=user_url,
        rows=rows,
        error=error,
        here=flags_url(tenant_id, **query) if tenant_id else FLAGS,
        next_query=urlencode({**query, "tenant": str(tenant_id), "cursor": next_cursor})
        if next_cursor
        else "",
    )


@router.post(f"{FLAGS}/{{flag_id}}/resolve")
async def resolve_flag(
    flag_id: int,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    redis: RedisDep,
    action: Annotated[str, Form(max_length=20)] = "",
    note: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    """Unfreeze or keep frozen (``POST .../flags/{id}/resolve``'s service). A flag resolved
    already (another admin was quicker, a second click) is 409, shown on the queue."""
    tenant_id = chosen_tenant(request, operator)
    if tenant_id is None:
        raise NotFound("Choose a tenant first")
    require_write(operator, tenant_id)
    if not 1 <= flag_id <= 2**63 - 1:
        raise NotFound("Flag not found")
    try:
        body = checked(schemas.ResolveIn, {"action": action, "note": note.strip()})
        await anomaly.resolve_flag(
            request.app.state.db,
            redis,
            request,
            operator.admin,
            tenant_id,
            flag_id,
            action=body.action,
            note=body.note,
        )
    except AppError as exc:
        if not form_problem(exc):
            raise
        return await _flags_page(
            request, operator, session, status_code=exc.status, error=exc.message
        )
    back = {k: v for k in _FILTERS if (v := request.query_params.get(k, "")[:300])}
    return see_other(flags_url(tenant_id, **back), f"flag-{body.action}")
