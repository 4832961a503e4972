"""Tenants and admin accounts through the admin API."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.admin.helpers import (
    bearer,
    create_admin,
    create_tenant,
    login,
    root_headers,
    slug,
)


async def test_creating_a_tenant_returns_it_and_opens_its_system_accounts(client, db) -> None:
    wanted = slug()
    response = await client.post(
        "/api/v1/admin/tenants",
        json={"name": "Acme Pictures", "slug": wanted},
        headers=await root_headers(client),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert {k: body[k] for k in ("name", "slug", "status")} == {
        "name": "Acme Pictures",
        "slug": wanted,
        "status": "active",
    }
    uuid.UUID(body["id"])
    async with db.session() as s:
        kinds = (
            (
                await s.execute(
                    text("SELECT kind FROM accounts WHERE tenant_id = :t ORDER BY kind"),
                    {"t": body["id"]},
                )
            )
            .scalars()
            .all()
        )
        audited = (
            await s.execute(
                text(
                    "SELECT actor, details FROM audit_log WHERE action = 'tenant.create' "
                    "AND tenant_id = :t"
                ),
                {"t": body["id"]},
            )
        ).one()
    assert kinds == ["issuance", "revenue"]
    assert audited.actor == "root@swapmeter.test"
    assert audited.details == {"name": "Acme Pictures", "slug": wanted}


async def test_slug_is_derived_from_the_name_and_a_taken_slug_is_409(client) -> None:
    name = f"Café Zürich {uuid.uuid4().hex[:6]}!"
    first = await client.post(
        "/api/v1/admin/tenants", json={"name": name}, headers=await root_headers(client)
    )
    assert first.status_code == 201
    assert first.json()["slug"] == f"cafe-zurich-{name.split()[2][:6]}"
    again = await client.post(
        "/api/v1/admin/tenants", json={"name": name}, headers=await root_headers(client)
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "Conflict"


async def test_bad_slugs_are_refused(client) -> None:
    for bad in ["Upper", "under_score", "-leading", "trailing-", "sp ace", "", "acme\n"]:
        response = await client.post(
            "/api/v1/admin/tenants",
            json={"name": "x", "slug": bad},
            headers=await root_headers(client),
        )
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["code"] == "InvalidSlug"


async def test_only_platform_admins_create_tenants(client) -> None:
    tenant = await create_tenant(client)
    tenant_admin = await create_admin(client, tenant["id"])
    response = await client.post(
        "/api/v1/admin/tenants", json={"name": "Sneaky"}, headers=bearer(tenant_admin["token"])
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"


async def test_tenant_admins_list_and_read_only_their_tenant(client) -> None:
    tenant = await create_tenant(client)
    await create_tenant(client)
    tenant_admin = await create_admin(client, tenant["id"])
    listed = await client.get("/api/v1/admin/tenants", headers=bearer(tenant_admin["token"]))
    assert [t["id"] for t in listed.json()["items"]] == [tenant["id"]]
    own = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}", headers=bearer(tenant_admin["token"])
    )
    assert own.status_code == 200 and own.json()["slug"] == tenant["slug"]


async def test_approval_threshold_is_changed_and_audited(client, db) -> None:
    tenant = await create_tenant(client)
    tenant_admin = await create_admin(client, tenant["id"])
    url = f"/api/v1/admin/tenants/{tenant['id']}"
    changed = await client.patch(
        url, json={"approval_threshold": 5000}, headers=bearer(tenant_admin["token"])
    )
    assert changed.status_code == 200 and changed.json()["approval_threshold"] == 5000
    for loosening in (None, 9000):  # the tenant admin cannot weaken its own four-eyes rule
        refused = await client.patch(
            url, json={"approval_threshold": loosening}, headers=bearer(tenant_admin["token"])
        )
        assert refused.status_code == 403
    tightened = await client.patch(
        url, json={"approval_threshold": 4000}, headers=bearer(tenant_admin["token"])
    )
    assert tightened.json()["approval_threshold"] == 4000
    cleared = await client.patch(
        url, json={"approval_threshold": None}, headers=await root_headers(client)
    )
    assert cleared.json()["approval_threshold"] is None
    suspend = await client.patch(
        url, json={"status": "suspended"}, headers=bearer(tenant_admin["token"])
    )
    assert suspend.status_code == 403  # status is the platform's call
    async with db.session() as s:
        changes = (
            (
                await s.execute(
                    text(
                        "SELECT details->'changes'->'approval_threshold' FROM audit_log "
                        "WHERE action = 'tenant.update' AND tenant_id = :t ORDER BY id"
                    ),
                    {"t": tenant["id"]},
                )
            )
            .scalars()
            .all()
        )
    assert changes == [
        {"from": None, "to": 5000},
        {"from": 5000, "to": 4000},
        {"from": 4000, "to": None},
    ]


async def test_an_admin_of_an_unknown_tenant_cannot_be_created(client) -> None:
    response = await client.post(
        f"/api/v1/admin/tenants/{uuid.uuid4()}/admins",
        json={"email": "x@example.com", "password": "long-enough-1", "role": "tenant_admin"},
        headers=await root_headers(client),
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


async def test_admin_creation_checks_password_email_role_and_duplicates(client, db) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/admins"
    headers = await root_headers(client)
    email = f"Ops-{uuid.uuid4().hex[:8]}@Example.com"
    weak = await client.post(
        url, json={"email": email, "password": "short", "role": "tenant_admin"}, headers=headers
    )
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "WeakPassword"
    bad_email = await client.post(
        url,
        json={"email": "not-an-email", "password": "long-enough-1", "role": "auditor"},
        headers=headers,
    )
    assert bad_email.json()["error"]["code"] == "InvalidEmail"
    platform = await client.post(
        url,
        json={"email": email, "password": "long-enough-1", "role": "platform_admin"},
        headers=headers,
    )
    assert platform.status_code == 400 and platform.json()["error"]["code"] == "InvalidRole"
    created = await client.post(
        url,
        json={"email": email, "password": "long-enough-1", "role": "tenant_admin"},
        headers=headers,
    )
    assert created.status_code == 201
    assert set(created.json()) >= {"id", "email", "role"}
    assert created.json()["role"] == "tenant_admin"
    duplicate = await client.post(
        url,
        json={"email": email.lower(), "password": "long-enough-1", "role": "auditor"},
        headers=headers,
    )
    assert duplicate.status_code == 409
    async with db.session() as s:
        stored = (
            await s.execute(
                text("SELECT password_hash FROM admins WHERE id = :i"), {"i": created.json()["id"]}
            )
        ).scalar_one()
    assert stored.startswith("$argon2id$") and "long-enough-1" not in stored


async def test_a_role_not_allowed_where_the_admin_is_made_is_400_invalid_role(client, db) -> None:
    tenant = await create_tenant(client)
    headers = await root_headers(client)
    email = f"role-{uuid.uuid4().hex[:8]}@example.com"
    cases = [
        (f"/api/v1/admin/tenants/{tenant['id']}/admins", "platform_admin"),
        (f"/api/v1/admin/tenants/{tenant['id']}/admins", "owner"),
        (f"/api/v1/admin/tenants/{tenant['id']}/admins", ""),
        ("/api/v1/admin/admins", "tenant_admin"),  # a tenant admin needs a tenant
        ("/api/v1/admin/admins", "superuser"),
    ]
    for url, role in cases:
        body = {"email": email, "password": "long-enough-1", "role": role}
        response = await client.post(url, json=body, headers=headers)
        assert response.status_code == 400, (url, role, response.text)
        assert response.json()["error"]["code"] == "InvalidRole", (url, role)
    async with db.session() as s:
        made = await s.execute(text("SELECT 1 FROM admins WHERE email = :e"), {"e": email})
        assert made.first() is None
    # Reach is checked first: an admin of another tenant learns nothing about this one.
    other_admin = await create_admin(client, (await create_tenant(client))["id"])
    stranger = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/admins",
        json={"email": email, "password": "long-enough-1", "role": "owner"},
        headers=bearer(other_admin["token"]),
    )
    assert stranger.status_code == 404


async def test_tenant_admins_create_auditors_for_their_tenant_and_auditors_cannot(client) -> None:
    tenant = await create_tenant(client)
    tenant_admin = await create_admin(client, tenant["id"])
    auditor = await create_admin(client, tenant["id"], role="auditor")
    body = {
        "email": f"a-{uuid.uuid4().hex[:8]}@example.com",
        "password": "long-enough-1",
        "role": "auditor",
    }
    url = f"/api/v1/admin/tenants/{tenant['id']}/admins"
    by_admin = await client.post(url, json=body, headers=bearer(tenant_admin["token"]))
    assert by_admin.status_code == 201
    # Not another tenant admin, who could approve this one's recharges (four-eyes).
    second = {**body, "email": f"c-{uuid.uuid4().hex[:8]}@example.com", "role": "tenant_admin"}
    refused = await client.post(url, json=second, headers=bearer(tenant_admin["token"]))
    assert refused.status_code == 403
    body["email"] = f"b-{uuid.uuid4().hex[:8]}@example.com"
    by_auditor = await client.post(url, json=body, headers=bearer(auditor["token"]))
    assert by_auditor.status_code == 403
    platform = await client.post(
        "/api/v1/admin/admins",
        json={"email": body["email"], "password": "long-enough-1", "role": "platform_admin"},
        headers=bearer(tenant_admin["token"]),
    )
    assert platform.status_code == 403


async def test_a_disabled_admins_token_stops_working_at_once(client) -> None:
    tenant = await create_tenant(client)
    victim = await create_admin(client, tenant["id"])
    url = f"/api/v1/admin/tenants/{tenant['id']}"
    assert (await client.get(url, headers=bearer(victim["token"]))).status_code == 200
    disabled = await client.patch(
        f"/api/v1/admin/admins/{victim['id']}",
        json={"status": "disabled"},
        headers=await root_headers(client),
    )
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    refused = await client.get(url, headers=bearer(victim["token"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidToken"
    sign_in = await client.post(
        "/api/v1/auth/token", json={"email": victim["email"], "password": victim["password"]}
    )
    assert sign_in.status_code == 401


async def test_re_enabling_an_admin_does_not_revive_the_tokens_issued_before(client) -> None:
    """Disabling is how an operator cuts off a stolen token: re-enabled, the admin signs
    in afresh, and the old token (the thief's copy) stays refused until it expires."""
    tenant = await create_tenant(client)
    victim = await create_admin(client, tenant["id"])
    url = f"/api/v1/admin/tenants/{tenant['id']}"
    root = await root_headers(client)
    for status in ("disabled", "active"):
        changed = await client.patch(
            f"/api/v1/admin/admins/{victim['id']}", json={"status": status}, headers=root
        )
        assert changed.status_code == 200 and changed.json()["status"] == status
    stale = await client.get(url, headers=bearer(victim["token"]))
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "InvalidToken"
    sign_in = await client.post(
        "/api/v1/auth/token", json={"email": victim["email"], "password": victim["password"]}
    )
    assert sign_in.status_code == 200
    fresh = await client.get(url, headers=bearer(sign_in.json()["access_token"]))
    assert fresh.status_code == 200


async def test_only_platform_admins_disable_or_re_enable_a_tenant_admin(client) -> None:
    """A tenant admin manages its tenant's auditors, not its peers: re-enabling one the
    platform disabled would give the tenant a second approver again (four-eyes)."""
    tenant = await create_tenant(client)
    admin_a, admin_b = (
        await create_admin(client, tenant["id"]),
        await create_admin(client, tenant["id"]),
    )
    auditor = await create_admin(client, tenant["id"], role="auditor")
    root = await root_headers(client)
    url = "/api/v1/admin/admins/{}"
    assert (
        await client.patch(url.format(admin_b["id"]), json={"status": "disabled"}, headers=root)
    ).status_code == 200
    for status in ("active", "disabled"):
        peer = await client.patch(
            url.format(admin_b["id"]), json={"status": status}, headers=bearer(admin_a["token"])
        )
        assert peer.status_code == 403, peer.text
    own_auditor = await client.patch(
        url.format(auditor["id"]), json={"status": "disabled"}, headers=bearer(admin_a["token"])
    )
    assert own_auditor.status_code == 200
    still_out = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}", headers=bearer(admin_b["token"])
    )
    assert still_out.status_code == 401


async def test_a_platform_wide_auditor_reads_every_tenant_but_writes_nothing(client) -> None:
    tenant = await create_tenant(client)
    email = f"aud-{uuid.uuid4().hex[:8]}@example.com"
    created = await client.post(
        "/api/v1/admin/admins",
        json={"email": email, "password": "long-enough-1", "role": "auditor"},
        headers=await root_headers(client),
    )
    assert created.status_code == 201 and created.json()["tenant_id"] is None
    token = await login(client, email, "long-enough-1")
    read = await client.get(f"/api/v1/admin/tenants/{tenant['id']}", headers=bearer(token))
    assert read.status_code == 200
    write = await client.patch(
        f"/api/v1/admin/tenants/{tenant['id']}", json={"name": "renamed"}, headers=bearer(token)
    )
    assert write.status_code == 403


async def test_a_tenant_list_cursor_that_no_slug_could_be_is_400_invalid_cursor(client) -> None:
    headers = await root_headers(client)
    prefix = slug()
    for suffix in ("a", "b"):
        await create_tenant(client, slug=f"{prefix}-{suffix}")
    page = await client.get(
        "/api/v1/admin/tenants", params={"cursor": f"{prefix}-a", "limit": 1}, headers=headers
    )
    assert page.status_code == 200, page.text
    assert [t["slug"] for t in page.json()["items"]] == [f"{prefix}-b"]
    # "zz" could be a slug: a page after it, not an error.
    assert (
        await client.get("/api/v1/admin/tenants", params={"cursor": "zz"}, headers=headers)
    ).status_code == 200
    for bad in ("ZZ", "under_score", "-leading", "trailing-", "sp ace", "x" * 65, "a\x00", "é"):
        response = await client.get(
            "/api/v1/admin/tenants", params={"cursor": bad}, headers=headers
        )
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["code"] == "InvalidCursor", bad
