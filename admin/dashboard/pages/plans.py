"""A tenant's plans on its page (/dashboard/tenants/{id}): the editor's write, with PUT
semantics (``PUT /admin/tenants/{id}/plans/{name}``, ``admin.plans.put_plan``): the plan
named is created, or replaced whole (a limit left blank is no limit of the plan's own).
A second send of the same form writes the same plan again: nothing changes, nothing is
audited."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import Response

from admin import plans as admin_plans
from admin.dashboard.forms import optional_int
from admin.dashboard.pages.tenants import TENANTS, form_failed, tenant_url
from admin.dashboard.security import WriteOperator, require_write
from admin.dashboard.web import FLASHES, page_router, see_other
from admin.schemas import MAX_DAILY_FREE_TOKENS
from app.core.deps import DBSession
from app.core.errors import AppError, BadRequest, ValidationError
from app.tenancy.plans import PLAN_NAME_PATTERN, check_spec

router = page_router()
_NAME = re.compile(PLAN_NAME_PATTERN)

FLASHES["plan-saved"] = "Plan saved: it applies from the workers' next round."


@router.post(f"{TENANTS}/{{tenant_id}}/plans")
async def put_plan(
    tenant_id: uuid.UUID,
    request: Request,
    operator: WriteOperator,
    session: DBSession,
    name: Annotated[str, Form(max_length=100)] = "",
    daily_free_tokens: Annotated[str, Form(max_length=100)] = "",
    refill_time: Annotated[str, Form(max_length=20)] = "",
    timezone: Annotated[str, Form(max_length=100)] = "",
    rate_limit_per_second: Annotated[str, Form(max_length=100)] = "",
    max_concurrent_jobs: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    require_write(operator, tenant_id)
    sent = {
        "name": name,
        "daily_free_tokens": daily_free_tokens,
        "refill_time": refill_time,
        "timezone": timezone,
        "rate_limit_per_second": rate_limit_per_second,
        "max_concurrent_jobs": max_concurrent_jobs,
    }
    try:
        async with session.begin_nested():  # undone alone on error
            if _NAME.fullmatch(name.strip()) is None:
                raise BadRequest(
                    "name: 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"
                )
            tokens = optional_int(
                daily_free_tokens, "daily_free_tokens", low=0, high=MAX_DAILY_FREE_TOKENS
            )
            if tokens is None:
                raise ValidationError("daily_free_tokens is required")
            try:
                spec = check_spec(
                    daily_free_tokens=tokens,
                    refill_time=refill_time.strip(),
                    timezone=timezone.strip(),
                    rate_limit_per_second=optional_int(
                        rate_limit_per_second, "rate_limit_per_second", low=1, high=100_000
                    ),
                    max_concurrent_jobs=optional_int(
                        max_concurrent_jobs, "max_concurrent_jobs", low=1, high=10_000
                    ),
                )
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
            await admin_plans.put_plan(
                session, request, operator.admin, tenant_id, name.strip(), spec
            )
    except AppError as exc:
        return await form_failed(request, operator, session, tenant_id, exc, "plans", sent)
    return see_other(tenant_url(tenant_id) + "#plans", "plan-saved")
