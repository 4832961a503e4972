"""The anomaly rules' admin routes: setting a tenant's rules, the review queue and its
pages, validation, tenant scoping (404 across tenants) and the auditor's read-only access.
What the rules do to swaps: tests/jobs/test_anomaly_rules.py."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from app.jobs.anomaly import counters
from tests.admin.helpers import bearer, create_admin, create_tenant, import_users, root_headers


def rules_url(tenant_id: str) -> str:
    return f"/api/v1/admin/tenants/{tenant_id}/anomaly-rules"


async def insert_flag(db, tenant_id: str, external_id: str, rule: str) -> int:  # type: ignore[no-untyped-def]
    """An open flag as a breach writes it (the swap path: tests/jobs)."""
    async with db.session() as s:
        return int(
            (
                await s.execute(
                    text(
                        'INSERT INTO anomaly_flags (tenant_id, user_id, rule, observed, "limit", '
                        "action, evidence) SELECT :t, id, :rule, 5, 4, 'flag', "
                        "CAST(:evidence AS jsonb) FROM users WHERE tenant_id = :t "
                        "AND external_id = :e RETURNING id"
                    ),
                    {
                        "t": tenant_id,
                        "e": external_id,
                        "rule": rule,
                        "evidence": orjson.dumps({"rule": rule}).decode(),
                    },
                )
            ).scalar_one()
        )


async def test_rules_start_unset_and_a_put_replaces_them_whole_with_an_audit_entry(
    client, redis
) -> None:
    tenant = await create_tenant(client)
    headers = await root_headers(client)
    unset = await client.get(rules_url(tenant["id"]), headers=headers)
    assert unset.status_code == 200
    assert unset.json()["version"] == 0 and unset.json()["action"] is None
    assert unset.json()["max_requests_per_minute"] is None

    first = await client.put(
        rules_url(tenant["id"]),
        json={"max_requests_per_minute": 30, "max_tokens_per_day": 500, "action": "freeze"},
        headers=headers,
    )
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1 and first.json()["max_tokens_per_day"] == 500
    second = await client.put(
        rules_url(tenant["id"]),
        json={"max_same_source_per_hour": 3, "action": "flag"},
        headers=headers,
    )
    body = second.json()
    assert (body["version"], body["max_same_source_per_hour"], body["action"]) == (2, 3, "flag")
    assert body["max_requests_per_minute"] is None and body["max_tokens_per_day"] is None
    assert (await client.get(rules_url(tenant["id"]), headers=headers)).json() == body
    # In force for the swap path: in Redis, at the committed version.
    stored = await redis.hgetall(counters.rules_key(tenant["id"]))
    assert stored[b"v"] == b"2" and stored[b"same"] == b"3" and stored[b"rpm"] == b"0"

    log = await client.get(
        "/api/v1/admin/audit-log",
        params={"tenant_id": tenant["id"], "action": "anomaly.rules_update"},
        headers=headers,
    )
    items = log.json()["items"]
    assert len(items) == 2
    assert items[0]["details"]["from"]["max_requests_per_minute"] == 30
    assert items[0]["details"]["to"]["max_same_source_per_hour"] == 3


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"max_requests_per_minute": -1, "action": "freeze"}, "ValidationError"),
        ({"max_same_source_per_hour": 0, "action": "freeze"}, "ValidationError"),
        ({"max_same_source_per_hour": 100_001, "action": "freeze"}, "ValidationError"),
        ({"max_requests_per_minute": "5", "action": "freeze"}, "ValidationError"),
        ({"max_requests_per_minute": 5, "action": "ban"}, "ValidationError"),
        ({"max_requests_per_minute": 5}, "ValidationError"),
        ({"max_request_per_minute": 5, "action": "flag"}, "ValidationError"),
        ({"max_tokens_per_day": -1, "action": "flag"}, "InvalidAmount"),
        ({"max_tokens_per_day": 2.5, "action": "flag"}, "InvalidAmount"),
    ],
)
async def test_bad_rules_are_refused_with_their_code_and_change_nothing(
    client, body: dict[str, Any], code: str
) -> None:
    tenant = await create_tenant(client)
    headers = await root_headers(client)
    response = await client.put(rules_url(tenant["id"]), json=body, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] == code
    assert (await client.get(rules_url(tenant["id"]), headers=headers)).json()["version"] == 0


async def test_the_review_queue_pages_newest_first_and_filters_by_status_and_user(
    client, db
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["ann", "ben"])
    ids = [
        await insert_flag(db, tenant["id"], "ann", "requests_per_minute"),
        await insert_flag(db, tenant["id"], "ben", "requests_per_minute"),
        await insert_flag(db, tenant["id"], "ann", "tokens_per_day"),
    ]
    headers = await root_headers(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/flags"
    first = (await client.get(url, params={"status": "open", "limit": 2}, headers=headers)).json()
    assert [f["id"] for f in first["items"]] == [ids[2], ids[1]]
    assert first["items"][0]["user"] == "ann" and first["items"][0]["status"] == "open"
    rest = await client.get(
        url, params={"status": "open", "limit": 2, "cursor": first["next_cursor"]}, headers=headers
    )
    assert [f["id"] for f in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None
    only_ben = (await client.get(url, params={"user": "ben"}, headers=headers)).json()["items"]
    assert [f["id"] for f in only_ben] == [ids[1]]

    # unfreeze closes the user's every open flag; keep_frozen only its own.
    kept = await client.post(
        f"{url}/{ids[1]}/resolve", json={"action": "keep_frozen", "note": "n"}, headers=headers
    )
    assert kept.status_code == 200 and kept.json()["resolved_by"] == "root@swapmeter.test"
    ben = await client.get(f"/api/v1/admin/tenants/{tenant['id']}/users/ben", headers=headers)
    assert ben.json()["status"] == "frozen"
    freed = await client.post(
        f"{url}/{ids[0]}/resolve", json={"action": "unfreeze", "note": "ok"}, headers=headers
    )
    assert freed.status_code == 200 and freed.json()["note"] == "ok"
    assert (await client.get(url, params={"status": "open"}, headers=headers)).json()["items"] == []
    resolved = (await client.get(url, params={"status": "resolved"}, headers=headers)).json()
    assert len(resolved["items"]) == 3
    bad = await client.post(
        f"{url}/{ids[0]}/resolve", json={"action": "forgive", "note": ""}, headers=headers
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "ValidationError"
    assert (await client.get(url, params={"cursor": "x"}, headers=headers)).status_code == 400


async def test_an_admin_of_another_tenant_gets_404_and_an_auditor_only_reads(client, db) -> None:
    a = await create_tenant(client)
    b = await create_tenant(client)
    await import_users(client, b["id"], ["bob"])
    flag_b = await insert_flag(db, b["id"], "bob", "requests_per_minute")
    rules = {"max_requests_per_minute": 10, "action": "freeze"}
    resolve = {"action": "unfreeze", "note": "x"}
    for role in ("tenant_admin", "auditor"):
        admin_a = bearer((await create_admin(client, a["id"], role=role))["token"])
        for method, url, body in [
            ("GET", rules_url(b["id"]), None),
            ("PUT", rules_url(b["id"]), rules),
            ("GET", f"/api/v1/admin/tenants/{b['id']}/flags", None),
            ("POST", f"/api/v1/admin/tenants/{b['id']}/flags/{flag_b}/resolve", resolve),
        ]:
            response = await client.request(method, url, json=body, headers=admin_a)
            assert response.status_code == 404, (role, method, url, response.text)
    # Through its own tenant's path, B's flag is not found either (platform admin too).
    writer_a = bearer((await create_admin(client, a["id"]))["token"])
    for headers in (writer_a, await root_headers(client)):
        response = await client.post(
            f"/api/v1/admin/tenants/{a['id']}/flags/{flag_b}/resolve", json=resolve, headers=headers
        )
        assert response.status_code == 404
    auditor = bearer((await create_admin(client, b["id"], role="auditor"))["token"])
    assert (await client.get(rules_url(b["id"]), headers=auditor)).status_code == 200
    assert (
        await client.get(f"/api/v1/admin/tenants/{b['id']}/flags", headers=auditor)
    ).status_code == 200
    for method, url, body in [
        ("PUT", rules_url(b["id"]), rules),
        ("POST", f"/api/v1/admin/tenants/{b['id']}/flags/{flag_b}/resolve", resolve),
    ]:
        response = await client.request(method, url, json=body, headers=auditor)
        assert response.status_code == 403 and response.json()["error"]["code"] == "Forbidden"
    root = await root_headers(client)
    assert (await client.get(rules_url(b["id"]), headers=root)).json()["version"] == 0
    bob = await client.get(f"/api/v1/admin/tenants/{b['id']}/users/bob", headers=root)
    assert bob.json()["status"] == "active"
    missing = await client.get(rules_url(str(uuid.uuid4())), headers=root)
    assert missing.status_code == 404


async def test_a_tenant_webhook_url_is_an_http_url_and_can_be_cleared(client) -> None:
    tenant = await create_tenant(client)
    headers = await root_headers(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}"
    for bad in ("ftp://example.com/hook", "https://user:pw@example.com/", "not a url"):
        refused = await client.patch(url, json={"webhook_url": bad}, headers=headers)
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["code"] == "ValidationError"
    assert (await client.get(url, headers=headers)).json()["webhook_url"] is None
    hook = "https://hooks.example.com:8443/swapmeter?tenant=1"
    set_ = await client.patch(url, json={"webhook_url": hook}, headers=headers)
    assert set_.status_code == 200 and set_.json()["webhook_url"] == hook
    cleared = await client.patch(url, json={"webhook_url": None}, headers=headers)
    assert cleared.status_code == 200 and cleared.json()["webhook_url"] is None
