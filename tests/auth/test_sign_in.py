"""Admin sign-in: argon2 hashes, JWTs, the bootstrap admin, failed-login audit and throttle."""

from __future__ import annotations

import uuid

import jwt
from sqlalchemy import text

from app.auth.service import bootstrap_first_admin
from tests.admin.helpers import ROOT_EMAIL, ROOT_PASSWORD
from tests.conftest import TEST_JWT_SECRET


async def test_bootstrap_admin_is_created_once_with_an_argon2_hash(app, db, settings) -> None:
    async with db.session() as s:
        rows = (
            await s.execute(
                text("SELECT role, tenant_id, password_hash FROM admins WHERE email = :e"),
                {"e": ROOT_EMAIL},
            )
        ).all()
    assert len(rows) == 1
    role, tenant_id, password_hash = rows[0]
    assert (role, tenant_id) == ("platform_admin", None)
    assert password_hash.startswith("$argon2id$")
    assert ROOT_PASSWORD not in password_hash
    # A second start (or several processes starting together) creates nobody.
    assert await bootstrap_first_admin(db, settings) is False
    async with db.session() as s:
        audited = (
            await s.execute(text("SELECT count(*) FROM audit_log WHERE action = 'admin.bootstrap'"))
        ).scalar_one()
    assert audited == 1


async def test_sign_in_returns_a_bearer_jwt_with_role_issuer_and_expiry(client, settings) -> None:
    response = await client.post(
        "/api/v1/auth/token", json={"email": ROOT_EMAIL.upper(), "password": ROOT_PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.jwt_ttl_seconds
    claims = jwt.decode(
        body["access_token"], TEST_JWT_SECRET, algorithms=["HS256"], issuer=settings.jwt_issuer
    )
    assert claims["role"] == "platform_admin"
    assert claims["tenant"] is None
    assert claims["exp"] - claims["iat"] == settings.jwt_ttl_seconds
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


async def test_wrong_password_and_unknown_email_get_the_same_401_and_are_audited(
    client, db
) -> None:
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    wrong = await client.post(
        "/api/v1/auth/token",
        json={"email": ROOT_EMAIL, "password": "not-the-password"},
        headers={"X-Forwarded-For": "198.51.100.7"},
    )
    missing = await client.post(
        "/api/v1/auth/token",
        json={"email": unknown, "password": "whatever-password"},
        headers={"X-Request-ID": "login-probe-1", "X-Forwarded-For": "198.51.100.8"},
    )
    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidCredentials"
        assert response.json()["error"]["message"] == "Invalid email or password"
    async with db.session() as s:
        row = (
            await s.execute(
                text(
                    "SELECT actor, actor_ip, request_id, details FROM audit_log "
                    "WHERE action = 'auth.login_failed' AND details->>'email' = :e"
                ),
                {"e": unknown},
            )
        ).one()
    assert row.details == {"email": unknown, "reason": "unknown_email"}
    assert row.actor_ip == "198.51.100.8"
    assert row.request_id == "login-probe-1"


async def test_repeated_failed_sign_ins_from_one_address_are_throttled(client) -> None:
    email = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    headers = {"X-Forwarded-For": "203.0.113.99"}
    codes = []
    for _ in range(11):
        response = await client.post(
            "/api/v1/auth/token", json={"email": email, "password": "guess-guess"}, headers=headers
        )
        codes.append(response.status_code)
    assert codes[:10] == [401] * 10
    assert codes[10] == 429
    assert int(response.headers["retry-after"]) > 0
    # Another address is not affected.
    other = await client.post(
        "/api/v1/auth/token",
        json={"email": email, "password": "guess-guess"},
        headers={"X-Forwarded-For": "203.0.113.100"},
    )
    assert other.status_code == 401


async def test_malformed_sign_in_json_is_a_400_malformed_json(client) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        content=b'{"email": "a@b.c", "password": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MalformedJSON"
