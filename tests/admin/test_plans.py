"""Plans through the admin API: writing and reading them, roles and tenants, users put on
plans (PATCH, import), the user list's plan, and an operator's refill."""

from __future__ import annotations

from typing import Any

import httpx

from tests.admin.helpers import bearer, create_admin, create_tenant, import_users, root_headers

PLAN = {"daily_free_tokens": 5, "refill_time": "06:00", "timezone": "Asia/Seoul"}


async def _put(
    client: httpx.AsyncClient, tid: str, name: str, body: Any, headers: Any = None
) -> httpx.Response:
    return await client.put(
        f"/api/v1/admin/tenants/{tid}/plans/{name}",
        json=body,
        headers=headers or await root_headers(client),
    )


async def _patch(client: httpx.AsyncClient, tid: str, user: str, body: Any) -> httpx.Response:
    return await client.patch(
        f"/api/v1/admin/tenants/{tid}/users/{user}", json=body, headers=await root_headers(client)
    )


async def test_a_plan_is_written_whole_read_back_and_audited(client) -> None:
    tid = (await create_tenant(client))["id"]
    answer = await _put(client, tid, "free", {**PLAN, "rate_limit_per_second": 2})
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert {k: plan[k] for k in (*PLAN, "rate_limit_per_second", "max_concurrent_jobs")} == {
        **PLAN,
        "rate_limit_per_second": 2,
        "max_concurrent_jobs": None,
    }
    assert plan["refilled_day"] is None
    changed = await _put(client, tid, "free", {**PLAN, "daily_free_tokens": 7})
    assert changed.json()["daily_free_tokens"] == 7
    assert changed.json()["rate_limit_per_second"] is None  # written whole
    listed = await client.get(
        f"/api/v1/admin/tenants/{tid}/plans", headers=await root_headers(client)
    )
    assert [p["name"] for p in listed.json()["items"]] == ["free"]
    audit = await client.get(
        "/api/v1/admin/audit-log",
        params={"tenant_id": tid, "action": "plan.*"},
        headers=await root_headers(client),
    )
    actions = [(a["action"], a["details"]) for a in audit.json()["items"]]
    assert actions[0] == (
        "plan.update",
        {
            "changes": {
                "daily_free_tokens": {"from": 5, "to": 7},
                "rate_limit_per_second": {"from": 2, "to": None},
            }
        },
    )
    assert actions[1][0] == "plan.create"


async def test_an_unknown_time_zone_or_a_bad_time_is_a_validation_error(client) -> None:
    tid = (await create_tenant(client))["id"]
    for bad in ({"timezone": "Mars/Olympus_Mons"}, {"timezone": "EST+5"}, {"refill_time": "25:00"}):
        answer = await _put(client, tid, "free", {**PLAN, **bad})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "ValidationError"
    answer = await _put(client, tid, "free", {**PLAN, "daily_free_tokens": -1})
    assert answer.json()["error"]["code"] == "InvalidAmount"
    listed = await client.get(
        f"/api/v1/admin/tenants/{tid}/plans", headers=await root_headers(client)
    )
    assert listed.json()["items"] == []


async def test_plans_are_scoped_to_their_tenant_and_auditors_only_read(client) -> None:
    tid = (await create_tenant(client))["id"]
    other = (await create_tenant(client))["id"]
    assert (await _put(client, tid, "free", PLAN)).status_code == 200
    stranger = await create_admin(client, other)
    answer = await _put(client, tid, "free", PLAN, bearer(stranger["token"]))
    assert answer.status_code == 404
    read = await client.get(f"/api/v1/admin/tenants/{tid}/plans", headers=bearer(stranger["token"]))
    assert read.status_code == 404
    auditor = await create_admin(client, tid, role="auditor")
    answer = await _put(client, tid, "free", PLAN, bearer(auditor["token"]))
    assert answer.status_code == 403
    read = await client.get(
        f"/api/v1/admin/tenants/{tid}/plans/free", headers=bearer(auditor["token"])
    )
    assert read.status_code == 200 and read.json()["name"] == "free"
    missing = await client.get(
        f"/api/v1/admin/tenants/{tid}/plans/nope", headers=bearer(auditor["token"])
    )
    assert missing.json()["error"]["code"] == "PlanNotFound"


async def test_a_user_is_put_on_a_plan_by_patch_and_shows_it_everywhere(client) -> None:
    tid = (await create_tenant(client))["id"]
    await import_users(client, tid, ["ann", "bob"])
    await _put(client, tid, "vip", PLAN)
    answer = await _patch(client, tid, "ann", {"plan": "vip", "display_name": "Ann"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["plan"], answer.json()["display_name"]) == ("vip", "Ann")
    unknown = await _patch(client, tid, "bob", {"plan": "gold"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "PlanNotFound")
    bad_email = await _patch(client, tid, "bob", {"email": "not-an-address"})
    assert bad_email.json()["error"]["code"] == "InvalidEmail"
    shown = await client.get(
        f"/api/v1/admin/tenants/{tid}/users/ann", headers=await root_headers(client)
    )
    assert shown.json()["plan"] == "vip"
    page = await client.get(
        f"/api/v1/admin/tenants/{tid}/users",
        params={"plan": "vip"},
        headers=await root_headers(client),
    )
    assert [(u["external_id"], u["plan"]) for u in page.json()["items"]] == [("ann", "vip")]
    everyone = await client.get(
        f"/api/v1/admin/tenants/{tid}/users", headers=await root_headers(client)
    )
    assert [u["plan"] for u in everyone.json()["items"]] == ["vip", None]
    off = await _patch(client, tid, "ann", {"plan": None})
    assert off.json()["plan"] is None and off.json()["display_name"] == "Ann"


async def test_an_import_puts_new_and_existing_users_on_their_plans(client) -> None:
    tid = (await create_tenant(client))["id"]
    await import_users(client, tid, ["old"])
    await _put(client, tid, "vip", PLAN)
    answer = await client.post(
        f"/api/v1/admin/tenants/{tid}/users/import",
        json={
            "users": [
                {"external_id": "old", "plan": "vip"},
                {"external_id": "new", "plan": "vip"},
                {"external_id": "lost", "plan": "gold"},
                {"external_id": "plain"},
            ]
        },
        headers=await root_headers(client),
    )
    report = answer.json()
    assert (report["created"], report["existing"]) == (2, 1), report
    assert [(f["index"], f["code"]) for f in report["failed"]] == [(2, "PlanNotFound")]
    page = await client.get(
        f"/api/v1/admin/tenants/{tid}/users", headers=await root_headers(client)
    )
    assert {u["external_id"]: u["plan"] for u in page.json()["items"]} == {
        "new": "vip",
        "old": "vip",
        "plain": None,
    }


async def test_an_operator_refill_pays_the_day_once_and_the_balance_shows_it(client, db) -> None:
    tid = (await create_tenant(client))["id"]
    await import_users(client, tid, ["ann"])
    await _put(client, tid, "daily", {**PLAN, "timezone": "UTC", "refill_time": "00:00"})
    await _patch(client, tid, "ann", {"plan": "daily"})
    url = f"/api/v1/admin/tenants/{tid}/plans/daily/refill"
    first = await client.post(url, headers=await root_headers(client))
    assert first.status_code == 200, first.text
    assert (first.json()["users_refilled"], first.json()["tokens_granted"]) == (1, 5)
    again = await client.post(url, headers=await root_headers(client))
    assert again.json()["users_refilled"] == 0
    user = await client.get(
        f"/api/v1/admin/tenants/{tid}/users/ann", headers=await root_headers(client)
    )
    assert user.json()["balance"] == 5
    assert [lot["label"] for lot in user.json()["expiring"]] == ["daily:daily"]
    verify = await client.get(
        "/api/v1/admin/ledger/verify", params={"tenant_id": tid}, headers=await root_headers(client)
    )
    assert verify.json()["ok"] is True
