"""User import rows of the wrong JSON type fail one by one, like bad external ids."""

from __future__ import annotations

from tests.admin.helpers import create_tenant, root_headers

MIXED_ROWS = [
    {"external_id": "ok1"},
    {"external_id": 123},
    {"external_id": None},
    {},
    "bare-string",
    {"external_id": "ok2", "email": 5},
    {"external_id": "ok3", "display_name": ["not", "text"]},
    {"external_id": ""},  # a bad value, checked after the types
    {"external_id": "ok4", "email": "ok4@example.com"},
    None,
    {"external_id": "ok1"},  # twice in this batch
]


async def test_wrongly_typed_import_rows_fail_alone_with_their_index_and_the_rest_is_imported(
    client,
) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/users/import"
    headers = await root_headers(client)
    response = await client.post(url, json={"users": MIXED_ROWS}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["existing"]) == (2, 0)
    assert [(f["index"], f["external_id"], f["code"]) for f in body["failed"]] == [
        (1, None, "InvalidExternalId"),
        (2, None, "InvalidExternalId"),
        (3, None, "InvalidExternalId"),
        (4, None, "InvalidEntry"),
        (5, "ok2", "InvalidEmail"),
        (6, "ok3", "InvalidDisplayName"),
        (7, "", "InvalidExternalId"),
        (9, None, "InvalidEntry"),
        (10, "ok1", "DuplicateEntry"),
    ]
    assert all(f["message"] for f in body["failed"])
    for external_id, status in (("ok1", 200), ("ok4", 200), ("ok2", 404), ("123", 404)):
        user = await client.get(f"{url.removesuffix('/import')}/{external_id}", headers=headers)
        assert user.status_code == status, external_id

    log = await client.get(
        "/api/v1/admin/audit-log",
        params={"tenant_id": tenant["id"], "action": "user.import"},
        headers=headers,
    )
    details = log.json()["items"][0]["details"]
    assert details == {"requested": 11, "created": 2, "existing": 0, "failed": 9}


async def test_a_mixed_import_sent_again_with_its_key_replays_the_same_report(client) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/users/import"
    headers = {**await root_headers(client), "Idempotency-Key": "mixed-rows-1"}
    first = await client.post(url, json={"users": MIXED_ROWS}, headers=headers)
    again = await client.post(url, json={"users": MIXED_ROWS}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json() and first.json()["created"] == 2
    other = await client.post(url, json={"users": MIXED_ROWS[:3]}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "IdempotencyKeyReused"


async def test_more_than_10000_rows_is_too_many_whatever_their_types(client) -> None:
    tenant = await create_tenant(client)
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/users/import",
        json={"users": ["bare"] * 10_001},
        headers=await root_headers(client),
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "TooManyEntries"


async def test_an_import_body_without_a_users_list_is_still_a_validation_error(client) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/users/import"
    for body in ({}, {"users": "ok1"}, [{"external_id": "ok1"}]):
        response = await client.post(url, json=body, headers=await root_headers(client))
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "ValidationError", body
