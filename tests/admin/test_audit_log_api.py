"""GET /api/v1/admin/audit-log: filters, keyset pagination and the chain fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.admin.helpers import create_tenant, import_users, root_headers


async def test_audit_log_pages_newest_first_with_filters(client) -> None:
    tenant = await create_tenant(client)
    for n in range(5):
        await import_users(client, tenant["id"], [f"user-{n}"])
    headers = await root_headers(client)
    url = f"/api/v1/admin/audit-log?tenant_id={tenant['id']}&action=user.import&limit=2"
    seen: list[int] = []
    cursor = None
    while True:
        page = await client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    item = body["items"][-1]
    assert set(item) >= {
        "id",
        "at",
        "actor",
        "action",
        "tenant_id",
        "target",
        "details",
        "hash",
        "prev_hash",
    }
    assert item["details"] == {"requested": 1, "created": 1, "existing": 0, "failed": 0}
    assert item["actor"] == "root@swapmeter.test"
    assert len(item["hash"]) == len(item["prev_hash"]) == 64

    prefix = await client.get(
        f"/api/v1/admin/audit-log?tenant_id={tenant['id']}&action=tenant.*", headers=headers
    )
    assert [i["action"] for i in prefix.json()["items"]] == ["tenant.create"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await client.get("/api/v1/admin/audit-log", params={"since": future}, headers=headers)
    assert later.json() == {"items": [], "next_cursor": None}
    log = "/api/v1/admin/audit-log"
    for cursor in ("zzz", "0", "-1", "99999999999999999999"):
        bad = await client.get(log, params={"cursor": cursor}, headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidCursor", cursor
    for since in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"):
        odd = await client.get(log, params={"since": since}, headers=headers)
        assert odd.status_code == 422, (since, odd.text)
        assert odd.json()["error"]["code"] == "ValidationError"
