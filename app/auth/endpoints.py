"""Admin sign-in route: POST /api/v1/auth/token."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from admin import schemas
from app.auth import service
from app.auth.dependencies import admin_ip_allowed
from app.auth.ip_allowlist import client_ip
from app.deps import DBSession, RedisDep, SettingsDep
from app.errors import InvalidCredentials

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[Depends(admin_ip_allowed)])


@router.post("/token", response_model=schemas.TokenResponse)
async def issue_token(
    body: schemas.TokenRequest,
    request: Request,
    session: DBSession,
    settings: SettingsDep,
    redis: RedisDep,
) -> schemas.TokenResponse:
    """Exchange an admin's email and password for a short-lived bearer token (JWT)."""
    ip = client_ip(request, settings)
    await service.ensure_login_not_throttled(redis, body.email, ip)
    outcome = await service.authenticate(session, settings, body.email, body.password)
    if isinstance(outcome, service.LoginFailure):
        # Recorded in its own transaction: the 401 below rolls back the request's one.
        async with request.app.state.db.session() as audit_session:
            await service.audit_login_failure(audit_session, request, outcome)
        await service.note_login_failure(redis, body.email, ip)
        raise InvalidCredentials("Invalid email or password")
    return schemas.TokenResponse(access_token=outcome.access_token, expires_in=outcome.expires_in)
