"""A user's writes from the user's page: freeze and unfreeze with a reason, a signed
adjustment (keyed: a double click or a reload applies it once), API keys (a new key is
shown once, on the page after its creation, and never again; revoke).

Each calls the service of its Admin API route (``admin.service``, ``admin.corrections``)
with the operator as the principal, then redirects (303) to the user's page with a flash
message. A refused write shows the user's page again with the contract's message at its
form (and the status of that error).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import Form, Request
from fastapi.responses import Response

from admin import corrections, schemas
from admin import service as admin_service
from admin.dashboard import forms
from admin.dashboard.pages.users import render_user, tenant_of_page, user_url
from admin.dashboard.security import CurrentOperator, Operator, WriteOperator, require_write
from admin.dashboard.web import FLASHES, PREFIX, page_router, render, see_other
from app.core.deps import DBSession, RedisDep
from app.core.errors import AppError, InvalidAmount, NotFound

router = page_router()

NEW_KEY_SECONDS = 300  # how long a created key waits to be shown (once)
_NEW_KEY_PREFIX = "swapmeter:dashboard:new-api-key:"
_INTEGER = re.compile(r"^[+-]?[0-9]{1,19}$")
Field = Annotated[str, Form()]

FLASHES.update(
    {
        "user-frozen": "The user is frozen: no holds, recharges or adjustments until unfrozen.",
        "user-unfrozen": "The user is active again.",
        "adjusted": "Adjustment applied.",
        "adjusted-again": "This adjustment was applied already: nothing was applied again.",
        "key-created": "API key created: copy it now, it is shown only once.",
        "key-revoked": "API key revoked: it no longer signs in.",
    }
)


def _path(what: str) -> str:
    return PREFIX + "/users/{external_id}/" + what


async def _write(
    request: Request,
    operator: Operator,
    session: Any,
    external_id: str,
    form: str,
    values: dict[str, Any],
    write: Callable[[uuid.UUID], Awaitable[str]],
) -> Response:
    """Run ``write`` (it returns the flash's key) for the page's tenant; a refused write
    (a 4xx but NotFound) shows the user's page again with its message at ``form``."""
    tenant_id = tenant_of_page(request, operator)
    require_write(operator, tenant_id)
    try:
        message = await write(tenant_id)
    except AppError as exc:
        if exc.status >= 500 or isinstance(exc, NotFound):
            raise
        return await render_user(
            request,
            operator,
            session,
            tenant_id,
            external_id,
            status_code=exc.status,
            error=(form, exc.message),
            values=values,
        )
    return see_other(user_url(tenant_id, external_id), message)


@router.post(_path("freeze"))
async def freeze(
    request: Request,
    external_id: str,
    operator: WriteOperator,
    session: DBSession,
    reason: Field = "",
) -> Response:
    return await _set_frozen(request, external_id, operator, session, reason, frozen=True)


@router.post(_path("unfreeze"))
async def unfreeze(
    request: Request,
    external_id: str,
    operator: WriteOperator,
    session: DBSession,
    reason: Field = "",
) -> Response:
    return await _set_frozen(request, external_id, operator, session, reason, frozen=False)


async def _set_frozen(
    request: Request,
    external_id: str,
    operator: Operator,
    session: Any,
    reason: str,
    *,
    frozen: bool,
) -> Response:
    async def write(tenant_id: uuid.UUID) -> str:
        body = forms.checked(schemas.FreezeRequest, {"reason": reason})
        await admin_service.set_user_frozen(
            session,
            request,
            operator.admin,
            tenant_id,
            external_id,
            frozen=frozen,
            reason=body.reason,
        )
        return "user-frozen" if frozen else "user-unfrozen"

    form = "freeze" if frozen else "unfreeze"
    return await _write(request, operator, session, external_id, form, {"reason": reason}, write)


@router.post(_path("adjust"))
async def adjust(
    request: Request,
    external_id: str,
    operator: WriteOperator,
    session: DBSession,
    amount: Field = "",
    reason: Field = "",
    idempotency_key: Field = "",
) -> Response:
    async def write(tenant_id: uuid.UUID) -> str:
        text = amount.strip().replace(",", "").replace(" ", "")
        if not _INTEGER.match(text):
            raise InvalidAmount("amount: a whole number, positive to credit, negative to debit")
        body = forms.checked(schemas.AdjustmentRequest, {"amount": int(text), "reason": reason})

        async def operation() -> dict[str, Any]:
            return await corrections.adjust_user(
                session,
                request,
                operator.admin,
                tenant_id,
                external_id,
                amount=body.amount,
                reason=body.reason,
                request_key=idempotency_key,
            )

        # A savepoint: a refused adjustment releases its key with it, for a retry.
        async with session.begin_nested():
            _, replayed = await forms.keyed_write(
                session,
                request,
                scope=f"tenant:{tenant_id}",
                key=idempotency_key,
                fields={"amount": body.amount, "reason": body.reason},
                operation=operation,
            )
        return "adjusted-again" if replayed else "adjusted"

    values = {"amount": amount, "reason": reason, "idempotency_key": idempotency_key}
    return await _write(request, operator, session, external_id, "adjust", values, write)


# -- API keys ------------------------------------------------------------------------------


def _new_key_slot(token: str) -> str:
    return _NEW_KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@router.post(_path("api-keys"))
async def create_key(
    request: Request,
    external_id: str,
    operator: WriteOperator,
    session: DBSession,
    redis: RedisDep,
    name: Field = "",
    rate_limit_per_second: Field = "",
) -> Response:
    """The key goes to Redis for a few minutes under a random token, for the next page
    (this operator's session only) to show once: never in a URL, a cookie or a log."""
    tenant_id = tenant_of_page(request, operator)
    require_write(operator, tenant_id)
    values = {"name": name, "rate_limit_per_second": rate_limit_per_second}
    try:
        limit = rate_limit_per_second.strip() or None
        body = forms.checked(schemas.ApiKeyCreate, {"name": name, "rate_limit_per_second": limit})
        row, key = await admin_service.create_api_key(
            session,
            request,
            operator.admin,
            tenant_id,
            external_id,
            name=body.name,
            rate_limit_per_second=body.rate_limit_per_second,
        )
    except AppError as exc:
        if exc.status >= 500 or isinstance(exc, NotFound):
            raise
        return await render_user(
            request, operator, session, tenant_id, external_id,
            status_code=exc.status, error=("api-key", exc.message), values=values,
        )  # fmt: skip
    token = secrets.token_urlsafe(24)
    shown = {"key": key, "prefix": row.prefix, "name": row.name, "session": operator.session_id}
    await redis.set(_new_key_slot(token), orjson.dumps(shown), ex=NEW_KEY_SECONDS)
    # The token names the stash (useless without this session); the key itself stays out.
    query = urlencode({"tenant": str(tenant_id), "new_key": token})
    return see_other(
        f"{PREFIX}/users/{quote(external_id, safe='')}/api-keys/new?{query}", "key-created"
    )


@router.get(_path("api-keys/new"))
async def show_new_key(
    request: Request,
    external_id: str,
    operator: CurrentOperator,
    redis: RedisDep,
    new_key: str = "",
) -> Response:
    tenant_id = tenant_of_page(request, operator)
    raw = await redis.getdel(_new_key_slot(new_key)) if new_key else None
    shown = orjson.loads(raw) if raw else None
    if shown is not None and shown.get("session") != operator.session_id:
        shown = None
    return render(
        request,
        "api_key_new.html",
        title="New API key",
        external_id=external_id,
        shown=shown,
        back=user_url(tenant_id, external_id),
    )


@router.post(_path("api-keys/{key_id}/revoke"))
async def revoke_key(
    request: Request,
    external_id: str,
    key_id: uuid.UUID,
    operator: WriteOperator,
    session: DBSession,
) -> Response:
    async def write(tenant_id: uuid.UUID) -> str:
        await admin_service.revoke_api_key(session, request, operator.admin, tenant_id, key_id)
        return "key-revoked"

    return await _write(request, operator, session, external_id, "api-key", {}, write)
