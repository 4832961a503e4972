"""Admin sign-in route: POST /api/v1/auth/token."""

from __future__ import annotations

from fastapi import Depends, Request

from admin import schemas
from app.auth import service
from app.auth.dependencies import admin_ip_allowed
from app.auth.ip_allowlist import client_ip
from app.deps import RedisDep, SettingsDep
from app.errors import (
    DocumentedRouter,
    Forbidden,
    InvalidCredentials,
    InvalidText,
    RateLimited,
    ServiceUnavailable,
    error_responses,
)

router = DocumentedRouter(
    prefix="/api/v1/auth",
    tags=["auth"],
    dependencies=[Depends(admin_ip_allowed)],
    responses=error_responses(Forbidden),  # the admin address allowlist
)


@router.post(
    "/token",
    response_model=schemas.TokenResponse,
    responses=error_responses(InvalidCredentials, InvalidText, RateLimited, ServiceUnavailable),
)
async def issue_token(
    body: schemas.TokenRequest, request: Request, settings: SettingsDep, redis: RedisDep
) -> schemas.TokenResponse:
    """Exchange an admin's email and password for a short-lived bearer token (JWT)."""
    issued = await service.sign_in(
        request.app.state.db,
        redis,
        settings,
        request,
        body.email,
        body.password,
        client_ip(request, settings),
    )
    return schemas.TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)
