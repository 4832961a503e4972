"""Admin JWTs: what is accepted and every forgery that is not."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from app.auth.tokens import decode_admin_token, issue_admin_token
from app.core.errors import InvalidToken, TokenExpired
from tests.conftest import TEST_JWT_SECRET


def _claims(settings, **over):  # type: ignore[no-untyped-def]
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "platform_admin",
        "tenant": None,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(over)
    return claims


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged_tokens(settings) -> dict[str, tuple[str, type]]:  # type: ignore[no-untyped-def]
    """name -> (token, expected error) for every attack the API must refuse."""
    good = _claims(settings)
    return {
        "alg none": (f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}.", InvalidToken),
        "wrong key": (
            jwt.encode(good, "another-secret-0123456789-0123456789-abc", algorithm="HS256"),
            InvalidToken,
        ),
        "other algorithm": (jwt.encode(good, TEST_JWT_SECRET, algorithm="HS384"), InvalidToken),
        "expired": (
            jwt.encode(
                _claims(settings, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
                TEST_JWT_SECRET,
                algorithm="HS256",
            ),
            TokenExpired,
        ),
        "wrong issuer": (
            jwt.encode(_claims(settings, iss="evil"), TEST_JWT_SECRET, algorithm="HS256"),
            InvalidToken,
        ),
        "no expiry": (
            jwt.encode(
                {k: v for k, v in good.items() if k != "exp"}, TEST_JWT_SECRET, algorithm="HS256"
            ),
            InvalidToken,
        ),
        "garbage": ("this.is.garbage", InvalidToken),
        "an API key": ("sm_abcdefghij_" + "x" * 43, InvalidToken),
    }


def test_an_issued_token_decodes_to_its_admin(settings) -> None:
    admin_id, tenant_id = uuid.uuid4(), uuid.uuid4()
    issued = issue_admin_token(
        settings, admin_id=admin_id, role="tenant_admin", tenant_id=tenant_id
    )
    claims = decode_admin_token(settings, issued.access_token)
    assert (claims.admin_id, claims.role, claims.tenant_id) == (admin_id, "tenant_admin", tenant_id)


@pytest.mark.parametrize(
    "attack",
    [
        "alg none",
        "wrong key",
        "other algorithm",
        "expired",
        "wrong issuer",
        "no expiry",
        "garbage",
        "an API key",
    ],
)
def test_forged_or_expired_tokens_are_refused(settings, attack) -> None:
    token, error = forged_tokens(settings)[attack]
    with pytest.raises(error):
        decode_admin_token(settings, token)
