"""Who is using the dashboard, and what they may do: the page builders' dependencies.

- ``CurrentOperator``: the signed-in operator (``Operator``), or a redirect to the
  sign-in page; the admin is read afresh from the database on every page, as the API's
  tokens are (``app.auth.dependencies.admin_of_session``).
- ``WriteOperator`` / ``require_write``: refuse auditors (403), and another tenant's
  object (404), before a write.
- ``check_csrf``: on the dashboard's router, so every POST is checked (403 without the
  form's token).
- ``chosen_tenant``: the tenant a page shows (``?tenant=``): a tenant-bound operator's
  own, or the one a platform operator picked (None: not picked yet).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from admin.dashboard import sessions
from app.auth.dependencies import AdminPrincipal, admin_of_session, ensure_tenant_access
from app.core.deps import DBSession, RedisDep, SettingsDep
from app.core.errors import Forbidden, InvalidToken, NotFound
from app.core.ip_allowlist import enforce_admin_ip_allowlist

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequired(Exception):
    """No live session: GETs are sent to the sign-in page (and back after it)."""


@dataclass(frozen=True)
class Operator:
    admin: AdminPrincipal
    session_id: str

    @property
    def role(self) -> str:
        return self.admin.role

    @property
    def email(self) -> str:
        return self.admin.email

    @property
    def tenant_id(self) -> uuid.UUID | None:
        """The one tenant this operator is bound to; None: every tenant."""
        return self.admin.tenant_id

    @property
    def is_platform_admin(self) -> bool:
        return self.admin.is_platform_admin

    @property
    def can_write(self) -> bool:
        """False for auditors: templates show no write button when it is False."""
        return self.admin.role != "auditor"


async def admin_address_allowed(request: Request, settings: SettingsDep) -> None:
    """The admin IP allowlist (``SWAPMETER_ADMIN_IP_ALLOWLIST``) applies to every page."""
    enforce_admin_ip_allowlist(request, settings)


async def check_csrf(request: Request, settings: SettingsDep) -> None:
    """403 ``Forbidden`` for a POST (or any unsafe method) whose form field ``csrf_token``
    (or ``X-CSRF-Token`` header) is not this browser's."""
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get("x-csrf-token")
    if given is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await request.form()).get("csrf_token")
            given = value if isinstance(value, str) else None
    if not sessions.csrf_ok(settings, request, given):
        raise Forbidden("This form has expired or did not come from this site; reload it")


async def current_operator(request: Request, session: DBSession, redis: RedisDep) -> Operator:
    stored = await sessions.find(redis, request.cookies.get(sessions.SESSION_COOKIE))
    if stored is None:
        raise SignInRequired()
    try:
        admin = await admin_of_session(session, stored.admin_id, stored.session_epoch)
    except InvalidToken:
        await sessions.end(redis, stored.id)
        raise SignInRequired() from None
    operator = Operator(admin=admin, session_id=stored.id)
    request.state.operator = operator  # for render(): the layout shows who is signed in
    return operator


CurrentOperator = Annotated[Operator, Depends(current_operator)]


def require_write(operator: Operator, tenant_id: uuid.UUID | None = None) -> None:
    """Forbidden (403) for auditors; NotFound (404) when ``tenant_id`` is another
    tenant's. Call it before any write, with the tenant the write touches."""
    if tenant_id is not None:
        ensure_tenant_access(operator.admin, tenant_id, write=True)
    elif not operator.can_write:
        raise Forbidden("Auditors have read-only access")


def require_read(operator: Operator, tenant_id: uuid.UUID) -> None:
    """NotFound (404) when ``tenant_id`` is outside the operator's reach."""
    ensure_tenant_access(operator.admin, tenant_id, write=False)


async def write_operator(operator: CurrentOperator) -> Operator:
    require_write(operator)
    return operator


WriteOperator = Annotated[Operator, Depends(write_operator)]


def parse_tenant(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("Tenant not found") from None


def chosen_tenant(request: Request, operator: Operator) -> uuid.UUID | None:
    """The tenant of ``?tenant=``, checked against the operator's reach (404 outside it);
    a tenant-bound operator's own tenant when none is given."""
    tenant_id = parse_tenant(request.query_params.get("tenant"))
    if tenant_id is None:
        return operator.tenant_id
    require_read(operator, tenant_id)
    return tenant_id
