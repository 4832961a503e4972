"""Sign-in and sign-out: /dashboard/login, /dashboard/logout.

Credentials go through ``app.auth.service.check_credentials``, as the API's
``POST /api/v1/auth/token`` does: the same password check, throttle and audit records.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from admin.dashboard import sessions
from admin.dashboard.security import CurrentOperator, SignInRequired, current_operator
from admin.dashboard.web import PREFIX, SECURITY_HEADERS, page_router, render
from app.auth import service as auth_service
from app.core.deps import DBSession, RedisDep, SettingsDep
from app.core.errors import InvalidCredentials, RateLimited
from app.core.ip_allowlist import client_ip

router = page_router()


def _safe_next(value: str | None) -> str:
    """Only a dashboard path of this site (no scheme, no other host)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


def _redirect(location: str) -> Response:
    response = RedirectResponse(location, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get(f"{PREFIX}/login")
async def login_form(
    request: Request,
    session: DBSession,
    redis: RedisDep,
    settings: SettingsDep,
    next: str | None = None,
    signed_out: bool = False,
) -> Response:
    try:
        await current_operator(request, session, redis)
        return _redirect(_safe_next(next))
    except SignInRequired:
        pass
    return _login_page(request, settings, next=_safe_next(next), signed_out=signed_out)


def _login_page(
    request: Request,
    settings: SettingsDep,
    *,
    next: str,
    status_code: int = 200,
    error: str | None = None,
    email: str = "",
    signed_out: bool = False,
) -> Response:
    login_id = request.cookies.get(sessions.LOGIN_COOKIE)
    if not sessions.well_formed(login_id):
        login_id = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status_code=status_code,
        csrf_token=sessions.csrf_token(settings, login_id),
        next=next,
        error=error,
        email=email,
        signed_out=signed_out,
    )
    sessions.set_cookie(
        response, request, settings, sessions.LOGIN_COOKIE, login_id, sessions.LOGIN_COOKIE_SECONDS
    )
    return response


@router.post(f"{PREFIX}/login")
async def login(
    request: Request,
    redis: RedisDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=2000)] = "",
    password: Annotated[str, Form(max_length=5000)] = "",
    next: Annotated[str, Form(max_length=2000)] = PREFIX,
) -> Response:
    target = _safe_next(next)
    try:
        if len(email) > 320 or len(password) > 1024 or not email.isprintable():
            raise InvalidCredentials("Invalid email or password")
        admin = await auth_service.check_credentials(
            request.app.state.db, redis, request, email, password, client_ip(request, settings)
        )
    except InvalidCredentials:
        return _login_page(
            request,
            settings,
            next=target,
            status_code=401,
            error="Wrong email or password.",
            email=email[:320],
        )
    except RateLimited as exc:
        response = _login_page(
            request,
            settings,
            next=target,
            status_code=429,
            error="Too many failed sign-ins from here: wait a few minutes and try again.",
            email=email[:320],
        )
        response.headers.update(exc.headers)
        return response
    stored = await sessions.start(redis, settings, admin.id, admin.session_epoch)
    response = _redirect(target)
    sessions.clear_cookie(response, request, settings, sessions.LOGIN_COOKIE)
    sessions.set_cookie(
        response,
        request,
        settings,
        sessions.SESSION_COOKIE,
        stored.id,
        settings.dashboard_session_seconds,
    )
    return response


@router.post(f"{PREFIX}/logout")
async def logout(
    request: Request, operator: CurrentOperator, redis: RedisDep, settings: SettingsDep
) -> Response:
    """Ends the session on the server: its cookie is refused from now on, wherever kept."""
    await sessions.end(redis, operator.session_id)
    response = _redirect(f"{PREFIX}/login?signed_out=true")
    sessions.clear_cookie(response, request, settings, sessions.SESSION_COOKIE)
    return response
