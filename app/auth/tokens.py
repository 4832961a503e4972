"""Admin access tokens: short-lived JWTs signed with the service secret.

Only the configured algorithm is accepted (``algorithms=[...]``), so ``alg: none`` and
algorithm-confusion tokens fail signature checks; expiry, issue time, issuer and subject
are required claims.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from app.core.errors import InvalidToken, TokenExpired
from app.core.settings import Settings

REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub"]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


@dataclass(frozen=True)
class TokenClaims:
    admin_id: uuid.UUID
    role: str
    tenant_id: uuid.UUID | None
    session_epoch: int = 0  # the admin's when the token was issued (``AdminRow``)


def issue_admin_token(
    settings: Settings,
    *,
    admin_id: uuid.UUID,
    role: str,
    tenant_id: uuid.UUID | None,
    session_epoch: int = 0,
) -> IssuedToken:
    now = datetime.now(UTC)
    claims = {
        "sub": str(admin_id),
        "role": role,
        "tenant": str(tenant_id) if tenant_id else None,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + timedelta(seconds=settings.jwt_ttl_seconds),
        "jti": uuid.uuid4().hex,
        "sv": session_epoch,
    }
    token = jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)
    return IssuedToken(access_token=token, expires_in=settings.jwt_ttl_seconds)


def decode_admin_token(settings: Settings, token: str) -> TokenClaims:
    """The verified claims, or InvalidToken / TokenExpired (both 401)."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired("Access token has expired") from None
    except jwt.InvalidTokenError:
        # What the decoder found wrong (a codec error, a claim's name) helps only a forger.
        raise InvalidToken("Invalid access token") from None
    try:
        admin_id = uuid.UUID(str(claims["sub"]))
        tenant = claims.get("tenant")
        tenant_id = uuid.UUID(str(tenant)) if tenant else None
        epoch = claims.get("sv", 0)  # absent from tokens issued before migration 0007
        if type(epoch) is not int:
            raise ValueError("sv")
    except ValueError:
        raise InvalidToken("Invalid access token") from None
    return TokenClaims(
        admin_id=admin_id,
        role=str(claims.get("role", "")),
        tenant_id=tenant_id,
        session_epoch=epoch,
    )
