"""End-user API keys: format, hashing, lookup, revocation and last-used bookkeeping."""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import text

from app.auth.dependencies import CurrentApiUser
from app.tenancy import api_keys
from app.tenancy import service as tenancy
from tests.admin.helpers import asgi_client, insert_tenant, insert_user, mini_app


def test_generated_keys_look_like_sm_prefix_secret_and_store_only_a_hash() -> None:
    new = api_keys.generate_api_key()
    scheme, prefix, secret = new.key.split("_", 2)
    assert scheme == "sm" and prefix == new.prefix
    assert 8 <= len(prefix) <= 12 and prefix.isalnum()
    assert len(secret) >= 43  # 32 random bytes, base64url
    assert new.secret_hash == hashlib.sha256(secret.encode()).digest()
    assert api_keys.split_api_key(new.key) == (prefix, secret)
    assert api_keys.secret_matches(secret, new.secret_hash)
    assert not api_keys.secret_matches(secret + "x", new.secret_hash)
    assert len({api_keys.generate_api_key().key for _ in range(100)}) == 100


def test_malformed_keys_are_not_split() -> None:
    for raw in ["", "sm_", "sk_abcdefgh_" + "x" * 43, "sm_ab_" + "x" * 43, "sm_abcdefghij_short"]:
        assert api_keys.split_api_key(raw) is None


def test_last_used_throttle_lets_one_flush_per_interval() -> None:
    throttle = api_keys.LastUsedThrottle(interval=60)
    key = uuid.uuid4()
    assert throttle.due(key) is True
    assert throttle.due(key) is False
    assert throttle.due(uuid.uuid4()) is True


def _whoami_app(settings, db):  # type: ignore[no-untyped-def]
    app = mini_app(settings, db)

    @app.get("/whoami")
    async def whoami(user: CurrentApiUser) -> dict:
        return {
            "external_id": user.external_id,
            "tenant_id": str(user.tenant_id),
            "key": str(user.api_key_id),
            "rate": user.rate_limit_per_second,
        }

    return app


async def _new_key(db, rate=None):  # type: ignore[no-untyped-def]
    tenant_id = await insert_tenant(db)
    user_id = await insert_user(db, tenant_id, "alice")
    async with db.session() as s:
        row, key = await tenancy.create_api_key(
            s, tenant_id=tenant_id, user_id=user_id, name="k", rate_limit_per_second=rate
        )
    return tenant_id, row, key


async def test_a_key_authenticates_by_bearer_or_x_api_key_header(settings, db) -> None:
    tenant_id, row, key = await _new_key(db, rate=7)
    async with asgi_client(_whoami_app(settings, db)) as c:
        by_bearer = await c.get("/whoami", headers={"Authorization": f"Bearer {key}"})
        by_header = await c.get("/whoami", headers={"X-API-Key": key})
    assert by_bearer.status_code == by_header.status_code == 200
    assert by_bearer.json() == {
        "external_id": "alice",
        "tenant_id": str(tenant_id),
        "key": str(row.id),
        "rate": 7,
    }
    async with db.session() as s:
        stored = (
            await s.execute(
                text("SELECT secret_hash, prefix FROM api_keys WHERE id = :i"), {"i": row.id}
            )
        ).one()
    assert key.split("_", 2)[2].encode() not in bytes(stored.secret_hash)
    assert stored.prefix == row.prefix


async def test_missing_wrong_or_malformed_keys_get_401(settings, db) -> None:
    _, row, key = await _new_key(db)
    wrong_secret = f"sm_{row.prefix}_" + "A" * 43
    async with asgi_client(_whoami_app(settings, db)) as c:
        missing = await c.get("/whoami")
        wrong = await c.get("/whoami", headers={"X-API-Key": wrong_secret})
        unknown = await c.get("/whoami", headers={"X-API-Key": "sm_zzzzzzzzzz_" + "A" * 43})
        garbage = await c.get("/whoami", headers={"Authorization": "Bearer not-a-key"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "Unauthorized"
    for response in (wrong, unknown, garbage):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidApiKey"


async def test_a_revoked_key_gets_401_on_the_very_next_request(settings, db) -> None:
    tenant_id, row, key = await _new_key(db)
    async with asgi_client(_whoami_app(settings, db)) as c:
        assert (await c.get("/whoami", headers={"X-API-Key": key})).status_code == 200
        async with db.session() as s:
            await tenancy.revoke_api_key(s, tenant_id, row.id)
        after = await c.get("/whoami", headers={"X-API-Key": key})
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "InvalidApiKey"


async def test_a_suspended_tenants_keys_are_refused(settings, db) -> None:
    tenant_id, _, key = await _new_key(db)
    async with db.session() as s:
        await s.execute(
            text("UPDATE tenants SET status = 'suspended' WHERE id = :t"), {"t": tenant_id}
        )
    async with asgi_client(_whoami_app(settings, db)) as c:
        response = await c.get("/whoami", headers={"X-API-Key": key})
    assert response.status_code == 403


async def test_last_used_at_is_recorded_without_a_write_per_request(settings, db) -> None:
    _, row, key = await _new_key(db)
    async with asgi_client(_whoami_app(settings, db)) as c:
        await c.get("/whoami", headers={"X-API-Key": key})
        async with db.session() as s:
            first = (
                await s.execute(
                    text("SELECT last_used_at, xmin::text FROM api_keys WHERE id = :i"),
                    {"i": row.id},
                )
            ).one()
        for _ in range(5):
            await c.get("/whoami", headers={"X-API-Key": key})
        async with db.session() as s:
            later = (
                await s.execute(
                    text("SELECT last_used_at, xmin::text FROM api_keys WHERE id = :i"),
                    {"i": row.id},
                )
            ).one()
    assert first.last_used_at is not None
    # Same row version: the five later requests wrote nothing.
    assert later == first
