"""A tenant's anomaly rules on its page (/dashboard/tenants/{id}#anomaly): the editor's
write, with PUT semantics (``PUT /admin/tenants/{id}/anomaly-rules``,
``app.jobs.anomaly.service.put_rules``): the rules are replaced whole, a limit left
blank is off. Read by the same request model as the API (``schemas.RulesIn``), so a
refused value gets the API's message. Audited as ``anomaly.rules_update``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import Response

from admin.dashboard.forms import checked, optional_int
from admin.dashboard.pages.tenants import RULE_FIELDS, TENANTS, form_failed, tenant_url
from admin.dashboard.security import WriteOperator, require_write
from admin.dashboard.web import FLASHES, page_router, see_other
from app.core.deps import DBSession, RedisDep
from app.core.errors import AppError
from app.jobs.anomaly import schemas
from app.jobs.anomaly import service as anomaly

router = page_router()

FLASHES["rules-saved"] = "Anomaly rules saved: they apply from the next swap."


@router.post(f"{TENANTS}/{{tenant_id}}/anomaly-rules")
async def put_rules(
    tenant_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    redis: RedisDep,
    max_requests_per_minute: Annotated[str, Form(max_length=100)] = "",
    max_same_source_per_hour: Annotated[str, Form(max_length=100)] = "",
    max_tokens_per_day: Annotated[str, Form(max_length=100)] = "",
    action: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    require_write(operator, tenant_id)
    sent = {
        "max_requests_per_minute": max_requests_per_minute,
        "max_same_source_per_hour": max_same_source_per_hour,
        "max_tokens_per_day": max_tokens_per_day,
        "action": action,
    }
    try:
        values = {
            name: optional_int(sent[name], name, low=-(2**62), high=2**62) for name in RULE_FIELDS
        }
        body = checked(schemas.RulesIn, {**values, "action": action})
        await anomaly.put_rules(
            request.app.state.db, redis, request, operator.admin, tenant_id, body.model_dump()
        )
    except AppError as exc:
        return await form_failed(request, operator, session, tenant_id, exc, "rules", sent)
    return see_other(tenant_url(tenant_id) + "#anomaly", "rules-saved")
