"""A tenant admin (or auditor) of tenant A gets 404 for every object of tenant B."""

from __future__ import annotations

import uuid

import pytest

from tests.admin.helpers import (
    bearer,
    create_admin,
    create_api_key,
    create_tenant,
    import_users,
    root_headers,
)
from tests.auth.test_tokens import forged_tokens


@pytest.fixture
async def two_tenants(client):  # type: ignore[no-untyped-def]
    a = await create_tenant(client)
    b = await create_tenant(client)
    await import_users(client, a["id"], ["alice"])
    await import_users(client, b["id"], ["bob"])
    b_key = await create_api_key(client, b["id"], "bob")
    # A real batch of B, left pending so that "approve" would have something to do.
    await client.patch(
        f"/api/v1/admin/tenants/{b['id']}",
        json={"approval_threshold": 1},
        headers=await root_headers(client),
    )
    batch = await client.post(
        f"/api/v1/admin/tenants/{b['id']}/recharges/bulk",
        json={"users": ["bob"], "amount": 5, "reason": "isolation test"},
        headers=await root_headers(client),
    )
    assert batch.json()["status"] == "pending_approval", batch.text
    b_key["batch_id"] = batch.json()["batch_id"]
    return a, b, b_key


def _requests_on_b(b: dict, b_key: dict) -> list[tuple[str, str, dict | None]]:
    t = f"/api/v1/admin/tenants/{b['id']}"
    return [
        ("GET", t, None),
        ("PATCH", t, {"approval_threshold": 10}),
        ("GET", f"{t}/admins", None),
        (
            "POST",
            f"{t}/admins",
            {
                "email": f"x{uuid.uuid4().hex[:6]}@example.com",
                "password": "long-enough-1",
                "role": "tenant_admin",
            },
        ),
        ("POST", f"{t}/users/import", {"users": [{"external_id": "intruder"}]}),
        ("GET", f"{t}/users/bob", None),
        ("GET", f"{t}/users/nobody", None),
        ("POST", f"{t}/users/bob/api-keys", {"name": "stolen"}),
        ("GET", f"{t}/users/bob/api-keys", None),
        ("DELETE", f"{t}/api-keys/{b_key['id']}", None),
        ("POST", f"{t}/users/bob/freeze", {"reason": "x"}),
        ("POST", f"{t}/users/bob/unfreeze", {"reason": "x"}),
        ("GET", f"/api/v1/admin/audit-log?tenant_id={b['id']}", None),
        ("POST", f"{t}/recharges/bulk", {"users": ["bob"], "amount": 5, "reason": "x"}),
        ("GET", f"{t}/recharges/{b_key['batch_id']}", None),
        ("POST", f"{t}/recharges/{b_key['batch_id']}/approve", None),
        ("GET", f"/api/v1/admin/ledger/verify?tenant_id={b['id']}", None),
    ]


@pytest.mark.parametrize("role", ["tenant_admin", "auditor"])
async def test_an_admin_of_tenant_a_gets_404_for_every_object_of_tenant_b(
    client, two_tenants, role
) -> None:
    a, b, b_key = two_tenants
    admin_a = await create_admin(client, a["id"], role=role)
    for method, url, body in _requests_on_b(b, b_key):
        response = await client.request(method, url, json=body, headers=bearer(admin_a["token"]))
        assert response.status_code == 404, (method, url, response.status_code, response.text)
        assert response.json()["error"]["code"] == "NotFound", (method, url)
    # And nothing of B changed: the key still works, bob is not frozen, no intruder.
    bob = await client.get(
        f"/api/v1/admin/tenants/{b['id']}/users/bob", headers=await root_headers(client)
    )
    assert bob.json()["status"] == "active"
    intruder = await client.get(
        f"/api/v1/admin/tenants/{b['id']}/users/intruder", headers=await root_headers(client)
    )
    assert intruder.status_code == 404
    keys = await client.get(
        f"/api/v1/admin/tenants/{b['id']}/users/bob/api-keys", headers=await root_headers(client)
    )
    assert keys.json()[0]["revoked_at"] is None
    assert bob.json()["balance"] == 0  # the pending batch was not approved


async def test_an_admin_of_a_cannot_reach_bs_objects_through_as_path(client, two_tenants) -> None:
    a, b, b_key = two_tenants
    admin_a = await create_admin(client, a["id"])
    headers = bearer(admin_a["token"])
    own = f"/api/v1/admin/tenants/{a['id']}"
    for method, url in [
        ("DELETE", f"{own}/api-keys/{b_key['id']}"),
        ("GET", f"{own}/users/bob"),
        ("GET", f"{own}/recharges/{b_key['batch_id']}"),
        ("POST", f"{own}/recharges/{b_key['batch_id']}/approve"),
    ]:
        response = await client.request(method, url, headers=headers)
        assert response.status_code == 404, (method, url, response.text)


async def test_an_admin_of_a_cannot_disable_an_admin_of_b_or_a_platform_admin(
    client, two_tenants
) -> None:
    a, b, _ = two_tenants
    admin_a = await create_admin(client, a["id"])
    admin_b = await create_admin(client, b["id"])
    for target in (admin_b["id"], await _root_id(client)):
        response = await client.patch(
            f"/api/v1/admin/admins/{target}",
            json={"status": "disabled"},
            headers=bearer(admin_a["token"]),
        )
        assert response.status_code == 404
    still = await client.get(f"/api/v1/admin/tenants/{b['id']}", headers=bearer(admin_b["token"]))
    assert still.status_code == 200


async def _root_id(client) -> str:  # type: ignore[no-untyped-def]
    import jwt

    token = (await root_headers(client))["Authorization"].split()[1]
    return jwt.decode(token, options={"verify_signature": False})["sub"]


async def test_an_auditor_of_a_reads_a_but_cannot_write(client, two_tenants) -> None:
    a, _, _ = two_tenants
    auditor = await create_admin(client, a["id"], role="auditor")
    headers = bearer(auditor["token"])
    read = await client.get(f"/api/v1/admin/tenants/{a['id']}/users/alice", headers=headers)
    assert read.status_code == 200
    for method, url, body in [
        ("POST", f"/api/v1/admin/tenants/{a['id']}/users/alice/freeze", {"reason": "x"}),
        (
            "POST",
            f"/api/v1/admin/tenants/{a['id']}/users/import",
            {"users": [{"external_id": "z"}]},
        ),
        ("POST", f"/api/v1/admin/tenants/{a['id']}/users/alice/api-keys", {"name": "k"}),
    ]:
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code == 403, (url, response.text)
        assert response.json()["error"]["code"] == "Forbidden"


async def test_a_replayed_import_is_answered_only_to_whoever_may_import(
    client, two_tenants
) -> None:
    """The same body and Idempotency-Key from an admin of another tenant, or an auditor,
    get 403/404, not the first import's report."""
    a, _, _ = two_tenants
    url = f"/api/v1/admin/tenants/{a['id']}/users/import"
    body = {"users": [{"external_id": "replayed-1"}]}
    key = {"Idempotency-Key": "import-once"}
    first = await client.post(url, json=body, headers={**await root_headers(client), **key})
    assert first.status_code == 200
    outsider = await create_admin(client, (await create_tenant(client))["id"])
    auditor = await create_admin(client, a["id"], role="auditor")
    for caller, status in ((outsider, 404), (auditor, 403)):
        again = await client.post(url, json=body, headers={**bearer(caller["token"]), **key})
        assert again.status_code == status, again.text
        assert "idempotent-replayed" not in again.headers


async def test_the_audit_log_shows_a_tenant_admin_only_their_tenant(client, two_tenants) -> None:
    a, b, _ = two_tenants
    admin_a = await create_admin(client, a["id"])
    page = await client.get("/api/v1/admin/audit-log?limit=500", headers=bearer(admin_a["token"]))
    assert page.status_code == 200
    items = page.json()["items"]
    assert items and {i["tenant_id"] for i in items} == {a["id"]}
    root_view = await client.get(
        f"/api/v1/admin/audit-log?tenant_id={b['id']}", headers=await root_headers(client)
    )
    assert {i["tenant_id"] for i in root_view.json()["items"]} == {b["id"]}


@pytest.mark.parametrize(
    "attack", ["alg none", "wrong key", "expired", "wrong issuer", "garbage", "an API key"]
)
async def test_forged_tokens_get_401_with_a_code_from_the_admin_api(
    client, settings, attack
) -> None:
    token, error = forged_tokens(settings)[attack]
    response = await client.get("/api/v1/admin/tenants", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == error.code
    assert response.headers["www-authenticate"] == "Bearer"


async def test_no_token_is_401(client) -> None:
    response = await client.get("/api/v1/admin/tenants")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"
