"""Admin sign-in: argon2 hashes, JWTs, the bootstrap admin, failed-login audit and throttle."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import jwt
from argon2 import PasswordHasher
from sqlalchemy import text

from app.auth import service as auth_service
from app.auth.service import bootstrap_first_admin
from app.core.db import Database
from app.migrate import upgrade_to_head
from tests.admin.helpers import (
    ROOT_EMAIL,
    ROOT_PASSWORD,
    create_admin,
    create_tenant,
    insert_tenant,
    login,
)
from tests.conftest import TEST_JWT_SECRET


def _address() -> str:
    """An address of this test's own: throttle counters outlive a test run (15 minutes in
    Redis), so no two tests, nor two runs, may share one."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


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
    headers = {"X-Forwarded-For": _address()}
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
        headers={"X-Forwarded-For": "198.51.100.200"},
    )
    assert other.status_code == 401


async def test_guesses_sent_all_at_once_get_no_more_tries_than_one_after_another(
    client,
) -> None:
    tenant = await create_tenant(client)
    admin = await create_admin(client, tenant["id"])
    headers = {"X-Forwarded-For": _address()}
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/v1/auth/token",
                json={"email": admin["email"], "password": f"guess-{n}"},
                headers=headers,
            )
            for n in range(30)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [401] * 10 + [429] * 20


async def test_another_spelling_of_the_email_shares_the_accounts_tries(client) -> None:
    """PostgreSQL reads "İ" as "i" (the lookup finds the account); Python lower-cases it
    otherwise, so a throttle keyed by the email gave each spelling its own ten tries."""
    tenant = await create_tenant(client)
    admin = await create_admin(client, tenant["id"])
    headers = {"X-Forwarded-For": _address()}
    for _ in range(10):
        await client.post(
            "/api/v1/auth/token",
            json={"email": admin["email"], "password": "guess-guess"},
            headers=headers,
        )
    look_alike = admin["email"].replace("i", "İ", 1)
    response = await client.post(
        "/api/v1/auth/token",
        json={"email": look_alike, "password": admin["password"]},
        headers=headers,
    )
    assert response.status_code == 429


async def test_a_successful_sign_in_does_not_use_up_a_try(client) -> None:
    tenant = await create_tenant(client)
    admin = await create_admin(client, tenant["id"])  # signed in once already
    headers = {"X-Forwarded-For": _address()}

    async def sign_in(password: str) -> int:
        body = {"email": admin["email"], "password": password}
        return (await client.post("/api/v1/auth/token", json=body, headers=headers)).status_code

    assert [await sign_in("guess-guess") for _ in range(9)] == [401] * 9
    assert await sign_in(admin["password"]) == 200
    assert [await sign_in("guess-guess") for _ in range(2)] == [401, 429]


async def test_giving_back_a_try_after_its_window_ended_leaves_no_counter(redis) -> None:
    """A counter re-made by the give-back would have no expiry, and lock out for good."""
    login_try = auth_service.LoginTry((f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"), (1, 1))
    await login_try.give_back(redis)
    assert await redis.exists(*login_try.keys) == 0


async def test_one_address_trying_many_emails_is_throttled_but_its_admins_are_not(
    client, monkeypatch
) -> None:
    """The address's own limit counts tries for unknown emails only: a probe from an office
    NAT or a proxy must not lock out the real admins behind it."""
    monkeypatch.setattr(auth_service, "ADDRESS_FAILURE_LIMIT", 5)
    tenant = await create_tenant(client)
    admin = await create_admin(client, tenant["id"])
    headers = {"X-Forwarded-For": _address()}

    async def sign_in(email: str, password: str) -> int:
        body = {"email": email, "password": password}
        return (await client.post("/api/v1/auth/token", json=body, headers=headers)).status_code

    probes = [await sign_in(f"probe-{uuid.uuid4().hex[:8]}@example.com", "x" * 8) for _ in range(6)]
    assert probes == [401] * 5 + [429]
    assert await sign_in(admin["email"], admin["password"]) == 200


async def test_a_flood_of_bad_sign_ins_leaves_the_database_to_everyone_else(client) -> None:
    """The password check (argon2) holds no database connection: 40 bad sign-ins at once
    are all answered, and a request that needs the database is not kept waiting."""
    headers = {"X-Forwarded-For": _address()}
    flood = asyncio.gather(
        *(
            client.post(
                "/api/v1/auth/token",
                json={"email": f"flood-{n}-{uuid.uuid4().hex[:6]}@example.com", "password": "x"},
                headers=headers,
            )
            for n in range(40)
        )
    )
    started = time.monotonic()
    ready = await client.get("/readyz")
    waited = time.monotonic() - started
    responses = await flood
    assert ready.status_code == 200 and waited < 5
    assert {r.status_code for r in responses} == {401}


async def test_a_successful_sign_in_is_audited_with_its_address(client, db) -> None:
    tenant = await create_tenant(client)
    admin = await create_admin(client, tenant["id"])
    async with db.session() as s:
        row = (
            await s.execute(
                text(
                    "SELECT actor, actor_ip, tenant_id FROM audit_log "
                    "WHERE action = 'auth.login' AND target = :t"
                ),
                {"t": f"admin:{admin['id']}"},
            )
        ).one()
    assert row.actor == admin["email"] and str(row.tenant_id) == tenant["id"]
    assert row.actor_ip == "127.0.0.1"


async def test_malformed_sign_in_json_is_a_400_malformed_json(client) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        content=b'{"email": "a@b.c", "password": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MalformedJSON"


async def test_an_outdated_password_hash_is_upgraded_at_sign_in(client, db) -> None:
    email = f"legacy-{uuid.uuid4().hex[:8]}@example.com"
    old_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("legacy-pass-1")
    tenant_id = await insert_tenant(db)
    async with db.session() as s:
        await s.execute(
            text(
                "INSERT INTO admins (email, password_hash, role, tenant_id) "
                "VALUES (:e, :h, 'tenant_admin', :t)"
            ),
            {"e": email, "h": old_hash, "t": tenant_id},
        )
    await login(client, email, "legacy-pass-1")
    async with db.session() as s:
        stored = (
            await s.execute(text("SELECT password_hash FROM admins WHERE email = :e"), {"e": email})
        ).scalar_one()
    assert stored != old_hash
    assert not PasswordHasher().check_needs_rehash(stored)
    await login(client, email, "legacy-pass-1")  # the new hash verifies


async def test_processes_starting_together_create_exactly_one_bootstrap_admin(
    servers, settings
) -> None:
    server_url, _ = servers
    name = f"swapmeter_bootstrap_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    databases: list[Database] = []
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        databases = [Database(url, pool_size=2, max_overflow=0) for _ in range(4)]
        created = await asyncio.gather(*(bootstrap_first_admin(d, settings) for d in databases))
        async with databases[0].session() as s:
            admins = (await s.execute(text("SELECT email, role FROM admins"))).all()
            audited = (
                await s.execute(
                    text("SELECT count(*) FROM audit_log WHERE action = 'admin.bootstrap'")
                )
            ).scalar_one()
        assert sorted(created) == [False, False, False, True]
        assert [tuple(a) for a in admins] == [(ROOT_EMAIL, "platform_admin")]
        assert audited == 1
    finally:
        for database in databases:
            await database.dispose()
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
