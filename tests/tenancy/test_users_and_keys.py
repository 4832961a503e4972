"""End users and their API keys through the admin API: import, read, freeze, keys."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import text

from app.auth.dependencies import CurrentApiUser
from tests.admin.helpers import (
    asgi_client,
    create_api_key,
    create_tenant,
    import_users,
    mini_app,
    root_headers,
)


async def test_import_creates_new_users_counts_existing_and_reports_bad_entries(client, db) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["u1"])
    users = [
        {"external_id": "u1"},  # exists already
        {"external_id": "u2", "email": "u2@example.com", "display_name": "User Two"},
        {"external_id": ""},
        {"external_id": "x" * 256},
        {"external_id": "u3", "email": "not-an-email"},
        {"external_id": "u2"},  # twice in this batch
        {"external_id": "u4"},
        {"external_id": "team/alice"},  # could never be named in /users/{external_id}
        {"external_id": ".."},
        {"external_id": "x\ud800"},  # an unpaired surrogate: not storable text
        {"external_id": "u5", "display_name": "nul\x00"},
        {"external_id": "u6", "email": "a\ud800@example.com"},
    ]
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/users/import",
        # json.dumps escapes the unpaired surrogates (httpx's encoder refuses them).
        content=json.dumps({"users": users}),
        headers={**await root_headers(client), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["existing"]) == (2, 1)
    assert [(f["index"], f["code"]) for f in body["failed"]] == [
        (2, "InvalidExternalId"),
        (3, "InvalidExternalId"),
        (4, "InvalidEmail"),
        (5, "DuplicateEntry"),
        (7, "InvalidExternalId"),
        (8, "InvalidExternalId"),
        (9, "InvalidExternalId"),
        (10, "InvalidDisplayName"),
        (11, "InvalidEmail"),
    ]
    assert all(f["message"] for f in body["failed"])
    assert body["failed"][6]["external_id"] == "x\\ud800"  # echoed escaped
    async with db.session() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT u.external_id, u.email, a.balance FROM users u "
                    "JOIN accounts a ON a.user_id = u.id WHERE u.tenant_id = :t "
                    "ORDER BY u.external_id"
                ),
                {"t": tenant["id"]},
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("u1", None, 0),
        ("u2", "u2@example.com", 0),
        ("u4", None, 0),
    ]


async def test_importing_10000_users_is_one_call_and_10001_is_refused(client, db) -> None:
    tenant = await create_tenant(client)
    ids = [f"bulk-{i:05d}" for i in range(10_000)]
    body = await import_users(client, tenant["id"], ids)
    assert (body["created"], body["existing"], body["failed"]) == (10_000, 0, [])
    again = await import_users(client, tenant["id"], ids)
    assert (again["created"], again["existing"]) == (0, 10_000)
    async with db.session() as s:
        accounts = (
            await s.execute(
                text("SELECT count(*) FROM accounts WHERE tenant_id = :t AND kind = 'user'"),
                {"t": tenant["id"]},
            )
        ).scalar_one()
    assert accounts == 10_000
    too_many = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/users/import",
        json={"users": [{"external_id": f"x{i}"} for i in range(10_001)]},
        headers=await root_headers(client),
    )
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "TooManyEntries"


async def test_import_with_an_idempotency_key_replays_the_first_report(client) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/users/import"
    headers = {**await root_headers(client), "Idempotency-Key": uuid.uuid4().hex}
    body = {"users": [{"external_id": "a"}, {"external_id": "b"}]}
    first = await client.post(url, json=body, headers=headers)
    replay = await client.post(url, json=body, headers=headers)
    assert first.json() == replay.json() == {"created": 2, "existing": 0, "failed": []}
    assert replay.headers["idempotent-replayed"] == "true"
    other = await client.post(url, json={"users": [{"external_id": "c"}]}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IdempotencyKeyReused"


async def test_malformed_import_json_is_400_and_unknown_tenant_is_404(client) -> None:
    tenant = await create_tenant(client)
    headers = {**await root_headers(client), "Content-Type": "application/json"}
    malformed = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/users/import",
        content=b'{"users": [{"external_id": "a"},',
        headers=headers,
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "MalformedJSON"
    unknown = await client.post(
        f"/api/v1/admin/tenants/{uuid.uuid4()}/users/import",
        json={"users": [{"external_id": "a"}]},
        headers=await root_headers(client),
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NotFound"


async def test_reading_a_user_shows_balance_held_available_status(client) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["reader"])
    response = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}/users/reader", headers=await root_headers(client)
    )
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("external_id", "balance", "held", "available", "status")} == {
        "external_id": "reader",
        "balance": 0,
        "held": 0,
        "available": 0,
        "status": "active",
    }
    assert body["created_at"]
    missing = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}/users/nobody", headers=await root_headers(client)
    )
    assert missing.status_code == 404


async def test_freeze_and_unfreeze_change_the_status_and_are_audited(client, db) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["icy"])
    base = f"/api/v1/admin/tenants/{tenant['id']}/users/icy"
    frozen = await client.post(
        f"{base}/freeze", json={"reason": "chargeback"}, headers=await root_headers(client)
    )
    assert frozen.status_code == 200 and frozen.json()["status"] == "frozen"
    thawed = await client.post(
        f"{base}/unfreeze", json={"reason": "resolved"}, headers=await root_headers(client)
    )
    assert thawed.status_code == 200 and thawed.json()["status"] == "active"
    no_reason = await client.post(f"{base}/freeze", json={}, headers=await root_headers(client))
    assert no_reason.status_code == 422
    async with db.session() as s:
        actions = (
            await s.execute(
                text(
                    "SELECT action, details->>'reason' FROM audit_log WHERE tenant_id = :t "
                    "AND action LIKE 'user.%freeze' ORDER BY id"
                ),
                {"t": tenant["id"]},
            )
        ).all()
    assert [tuple(a) for a in actions] == [
        ("user.freeze", "chargeback"),
        ("user.unfreeze", "resolved"),
    ]


async def test_an_api_key_is_shown_once_listed_without_secret_and_revoked(client, db) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["keyholder"])
    created = await create_api_key(
        client, tenant["id"], "keyholder", name="prod", rate_limit_per_second=5
    )
    assert set(created) >= {"id", "key", "prefix", "name"}
    assert created["key"].startswith(f"sm_{created['prefix']}_")
    assert created["name"] == "prod"
    listed = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}/users/keyholder/api-keys",
        headers=await root_headers(client),
    )
    assert [k["prefix"] for k in listed.json()] == [created["prefix"]]
    assert created["key"] not in listed.text
    revoked = await client.delete(
        f"/api/v1/admin/tenants/{tenant['id']}/api-keys/{created['id']}",
        headers=await root_headers(client),
    )
    assert revoked.status_code == 204
    async with db.session() as s:
        revoked_at, actions = (
            await s.execute(
                text(
                    "SELECT k.revoked_at, (SELECT array_agg(action ORDER BY id) FROM audit_log "
                    "WHERE target = 'api_key:' || k.id) FROM api_keys k WHERE k.id = :i"
                ),
                {"i": created["id"]},
            )
        ).one()
    assert revoked_at is not None
    assert actions == ["api_key.create", "api_key.revoke"]
    unknown = await client.delete(
        f"/api/v1/admin/tenants/{tenant['id']}/api-keys/{uuid.uuid4()}",
        headers=await root_headers(client),
    )
    assert unknown.status_code == 404


async def test_a_key_for_an_unknown_user_is_404(client) -> None:
    tenant = await create_tenant(client)
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/users/ghost/api-keys",
        json={"name": "k"},
        headers=await root_headers(client),
    )
    assert response.status_code == 404


async def test_a_key_revoked_through_the_admin_api_fails_on_its_next_request(
    client, settings, db
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["caller"])
    key = await create_api_key(client, tenant["id"], "caller")
    api = mini_app(settings, db)

    @api.get("/whoami")
    async def whoami(user: CurrentApiUser) -> dict:
        return {"external_id": user.external_id}

    async with asgi_client(api) as c:
        before = await c.get("/whoami", headers={"Authorization": f"Bearer {key['key']}"})
        assert before.json() == {"external_id": "caller"}
        revoked = await client.delete(
            f"/api/v1/admin/tenants/{tenant['id']}/api-keys/{key['id']}",
            headers=await root_headers(client),
        )
        assert revoked.status_code == 204
        after = await c.get("/whoami", headers={"Authorization": f"Bearer {key['key']}"})
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "InvalidApiKey"
