"""The billing HTTP API end to end: bulk recharge, approval, verification, end-user reads.

Tenants, admins, users and keys are made through the admin API (tests/admin/helpers.py).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.core.db import Database
from app.core.idempotency.service import purge_expired_keys
from billing import holds
from tests.admin.helpers import (
    bearer,
    create_admin,
    create_api_key,
    create_tenant,
    import_users,
    root_headers,
)


def _bulk_url(tenant_id: str) -> str:
    return f"/api/v1/admin/tenants/{tenant_id}/recharges/bulk"


async def _post_bulk(
    client: httpx.AsyncClient,
    tenant_id: str,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    key: str | None = None,
) -> httpx.Response:
    headers = dict(headers or await root_headers(client))
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(_bulk_url(tenant_id), json=body, headers=headers)


async def _balances(db: Database, tenant_id: str) -> dict[str, tuple[int, int]]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT u.external_id, a.balance, a.held FROM users u "
                "JOIN accounts a ON a.user_id = u.id WHERE u.tenant_id = :t"
            ),
            {"t": tenant_id},
        )
        return {r.external_id: (r.balance, r.held) for r in rows}


async def _entries_of_batch(db: Database, batch_id: str) -> int:
    async with db.session() as s:
        return (
            await s.execute(
                text("SELECT count(*) FROM ledger_entries WHERE batch_id = :b"), {"b": batch_id}
            )
        ).scalar_one()


async def _verify(client: httpx.AsyncClient, tenant_id: str | None = None, **kw: Any) -> Any:
    params = {"tenant_id": tenant_id} if tenant_id else {}
    headers = kw.get("headers") or await root_headers(client)
    response = await client.get("/api/v1/admin/ledger/verify", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _freeze(client: httpx.AsyncClient, tenant_id: str, external_id: str) -> None:
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/users/{external_id}/freeze",
        json={"reason": "test"},
        headers=await root_headers(client),
    )
    assert response.status_code == 200, response.text


# -- the seed's shape and per-user amounts --------------------------------------------------


async def test_bulk_recharge_with_one_amount_credits_every_user_and_get_returns_the_report(
    client, db
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["u1", "u2", "u3"])
    response = await _post_bulk(
        client,
        tenant["id"],
        {"users": ["u1", "u2", "u3"], "amount": 100, "reason": "promo", "operator": "ops"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert {k: report[k] for k in ("status", "requested", "succeeded", "failed")} == {
        "status": "applied",
        "requested": 3,
        "succeeded": 3,
        "failed": 0,
    }
    assert report["total_amount"] == 300 and report["failed_users"] == []
    assert await _balances(db, tenant["id"]) == {"u1": (100, 0), "u2": (100, 0), "u3": (100, 0)}
    assert await _entries_of_batch(db, report["batch_id"]) == 3

    again = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}/recharges/{report['batch_id']}",
        headers=await root_headers(client),
    )
    assert again.status_code == 200
    assert again.json() == report
    user = await client.get(
        f"/api/v1/admin/tenants/{tenant['id']}/users/u2", headers=await root_headers(client)
    )
    assert (user.json()["balance"], user.json()["available"]) == (100, 100)
    assert (await _verify(client, tenant["id"]))["ok"] is True


async def test_bulk_recharge_with_per_user_amounts_reports_bad_entries_and_applies_the_rest(
    client, db
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["a", "b", "c", "d"])
    await _freeze(client, tenant["id"], "d")
    body = {
        "entries": [
            {"user": "a", "amount": 5},
            {"user": "ghost", "amount": 5},
            {"user": "b", "amount": 2.5},
            {"user": "a", "amount": 7},
            {"user": "c", "amount": True},
            {"user": "d", "amount": 5},
            {"amount": 5},
            "not an entry",
        ]
    }
    report = (await _post_bulk(client, tenant["id"], body)).json()
    assert report["status"] == "applied"
    assert (report["requested"], report["succeeded"], report["failed"]) == (8, 1, 7)
    assert [(f["index"], f["user"], f["code"]) for f in report["failed_users"]] == [
        (1, "ghost", "UserNotFound"),
        (2, "b", "InvalidAmount"),
        (3, "a", "DuplicateEntry"),
        (4, "c", "InvalidAmount"),
        (5, "d", "AccountFrozen"),
        (6, None, "InvalidEntry"),
        (7, None, "InvalidEntry"),
    ]
    assert all(f["message"] for f in report["failed_users"])
    balances = await _balances(db, tenant["id"])
    assert balances == {"a": (5, 0), "b": (0, 0), "c": (0, 0), "d": (0, 0)}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"users": ["a"], "amount": ', 400, "MalformedJSON"),
        (b"", 400, "MalformedJSON"),
        (b'{"users": ["a"], "amount": "100"}', 400, "InvalidAmount"),
        (b'{"users": ["a"], "amount": 1000000000001}', 400, "InvalidAmount"),
        (b'{"users": ["a"]}', 422, "ValidationError"),
        (b'{"users": [], "amount": 1}', 422, "ValidationError"),
        (b'{"amount": 1}', 422, "ValidationError"),
        (b'{"users": ["a"], "entries": [], "amount": 1}', 422, "ValidationError"),
        (b'{"users": ["a"], "amount": 1, "mode": "yolo"}', 422, "ValidationError"),
        (b"[1, 2]", 422, "ValidationError"),
        # Control characters and unpaired surrogates: InvalidText, as in every text field
        # (issue 14; they were 422 ValidationError here before).
        (b'{"users": ["a"], "amount": 1, "reason": "x\\u0000y"}', 400, "InvalidText"),
        (b'{"users": ["a"], "amount": 1, "operator": "\\udfff"}', 400, "InvalidText"),
        (b'{"users": ["a"], "amount": 1, "reason": "tab\\t, bell\\u0007"}', 400, "InvalidText"),
    ],
)
async def test_a_malformed_bulk_body_fails_with_its_code_and_writes_nothing(
    client, db, body, status, code
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["a"])
    headers = {**await root_headers(client), "Content-Type": "application/json"}
    response = await client.post(_bulk_url(tenant["id"]), content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await _balances(db, tenant["id"]) == {"a": (0, 0)}


async def test_more_than_10000_entries_are_refused_as_too_many(client) -> None:
    tenant = await create_tenant(client)
    response = await _post_bulk(
        client, tenant["id"], {"users": [f"u{i}" for i in range(10_001)], "amount": 1}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "TooManyEntries"


async def test_bulk_recharge_of_an_unknown_tenant_is_not_found(client) -> None:
    response = await _post_bulk(client, str(uuid.uuid4()), {"users": ["a"], "amount": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


async def test_bulk_recharge_is_confined_to_the_admins_own_tenant_and_closed_to_auditors(
    client, db
) -> None:
    mine, other = await create_tenant(client), await create_tenant(client)
    await import_users(client, other["id"], ["x"])
    admin = await create_admin(client, mine["id"])
    auditor = await create_admin(client, mine["id"], role="auditor")
    body = {"users": ["x"], "amount": 1}
    foreign = await _post_bulk(client, other["id"], body, headers=bearer(admin["token"]))
    assert foreign.status_code == 404
    read_only = await _post_bulk(client, mine["id"], body, headers=bearer(auditor["token"]))
    assert read_only.status_code == 403 and read_only.json()["error"]["code"] == "Forbidden"
    anonymous = await client.post(_bulk_url(mine["id"]), json=body)
    assert anonymous.status_code == 401
    assert await _balances(db, other["id"]) == {"x": (0, 0)}


# -- idempotency ----------------------------------------------------------------------------


async def test_the_same_bulk_recharge_sent_20_times_concurrently_with_one_key_credits_once(
    client, db
) -> None:
    tenant = await create_tenant(client)
    users = [f"c{i}" for i in range(50)]
    await import_users(client, tenant["id"], users)
    body = {"users": users, "amount": 10, "reason": "launch"}
    headers = await root_headers(client)
    responses = await asyncio.gather(
        *(
            _post_bulk(client, tenant["id"], body, headers=headers, key="launch-1")
            for _ in range(20)
        )
    )
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["batch_id"] for r in responses}) == 1
    assert all(r.json() == responses[0].json() for r in responses)
    replayed = [r.headers.get("idempotent-replayed") == "true" for r in responses]
    assert replayed.count(False) == 1
    assert set((await _balances(db, tenant["id"])).values()) == {(10, 0)}
    async with db.session() as s:
        entries = (
            await s.execute(
                text("SELECT count(*) FROM ledger_entries WHERE tenant_id = :t"),
                {"t": tenant["id"]},
            )
        ).scalar_one()
        audits = (
            await s.execute(
                text("SELECT count(*) FROM audit_log WHERE tenant_id = :t AND action = :a"),
                {"t": tenant["id"], "a": "recharge.bulk"},
            )
        ).scalar_one()
    assert (entries, audits) == (50, 1)
    reused = await _post_bulk(client, tenant["id"], {**body, "amount": 11}, key="launch-1")
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "IdempotencyKeyReused"

    # Days later the purge has forgotten the keys past their TTL; not a batch's.
    await _days_later(db, tenant["id"])
    late_reuse = await _post_bulk(client, tenant["id"], {**body, "amount": 11}, key="launch-1")
    assert late_reuse.status_code == 409
    assert late_reuse.json()["error"]["code"] == "IdempotencyKeyReused"
    late_replay = await _post_bulk(client, tenant["id"], body, key="launch-1")
    assert late_replay.status_code == 200
    assert late_replay.json()["batch_id"] == responses[0].json()["batch_id"]
    assert set((await _balances(db, tenant["id"])).values()) == {(10, 0)}


async def _days_later(db: Database, tenant_id: str) -> None:
    """The tenant's keys as the purge finds them 30 days on, after it ran."""
    async with db.session() as s:
        await s.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '30 days' "
                "WHERE scope = :scope"
            ),
            {"scope": f"tenant:{tenant_id}"},
        )
        await purge_expired_keys(s, ttl_hours=48)


async def test_a_batch_key_sent_again_returns_the_first_batch_and_credits_nothing_more(
    client, db
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["a", "b"])
    body = {"entries": [{"user": "a", "amount": 5}, {"user": "b", "amount": 5}]}
    first = await _post_bulk(client, tenant["id"], body, key="batch-1")
    again = await _post_bulk(client, tenant["id"], body, key="batch-1")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["batch_id"] == first.json()["batch_id"]
    assert again.json()["total_amount"] == 10
    assert (await _balances(db, tenant["id"]))["a"] == (5, 0)


async def test_a_batch_approved_after_its_first_answer_replays_that_answer(client, db) -> None:
    """The contract: a replay returns the first response. A batch answered pending and
    approved since is replayed as pending (GET reads it as it is now), however late."""
    tid, alice, bob = await _pending_tenant(client, ["a", "b"])
    body = {"users": ["a", "b"], "amount": 10}
    sent = await _post_bulk(client, tid, body, headers=bearer(alice["token"]), key="big-1")
    assert sent.json()["status"] == "pending_approval"
    url = f"/api/v1/admin/tenants/{tid}/recharges/{sent.json()['batch_id']}"
    approved = await client.post(url + "/approve", headers=bearer(bob["token"]))
    assert approved.json()["status"] == "applied"

    again = await _post_bulk(client, tid, body, headers=bearer(alice["token"]), key="big-1")
    await _days_later(db, tid)
    late = await _post_bulk(client, tid, body, headers=bearer(alice["token"]), key="big-1")
    for replay in (again, late):
        assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == sent.json()
    assert (await client.get(url, headers=bearer(alice["token"]))).json() == approved.json()
    assert await _balances(db, tid) == {"a": (10, 0), "b": (10, 0)}


async def test_a_bulk_recharge_key_sent_with_a_price_change_is_reused_even_days_later(
    client, db
) -> None:
    """Keys are scoped to the caller (the admin's tenant), not to the route: one key is
    one write. A bulk recharge's key stays taken for good."""
    tenant = await create_tenant(client)
    tid = tenant["id"]
    await import_users(client, tid, ["a"])
    headers = {**await root_headers(client), "Idempotency-Key": "one-write"}
    pricing_url = f"/api/v1/admin/tenants/{tid}/pricing"
    sent = await _post_bulk(client, tid, {"users": ["a"], "amount": 3}, key="one-write")
    assert sent.status_code == 200
    reused = await client.put(pricing_url, json={"image": 7}, headers=headers)
    await _days_later(db, tid)
    late = await client.put(pricing_url, json={"image": 7}, headers=headers)
    for response in (reused, late):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "IdempotencyKeyReused"
    prices = await client.get(pricing_url, headers=await root_headers(client))
    assert prices.json()["current"]["version"] == 0

    # And the other way round: a price change's key is no bulk recharge's.
    changed = await client.put(
        pricing_url, json={"image": 7}, headers={**headers, "Idempotency-Key": "price-1"}
    )
    assert changed.status_code == 200 and changed.json()["image"] == 7
    bulk = await _post_bulk(client, tid, {"users": ["a"], "amount": 3}, key="price-1")
    assert bulk.status_code == 409 and bulk.json()["error"]["code"] == "IdempotencyKeyReused"
    assert await _balances(db, tid) == {"a": (3, 0)}


# -- 10,000 entries -------------------------------------------------------------------------

BIG = 10_000


@pytest.fixture(scope="module")
async def big_tenant(client_factory) -> dict[str, Any]:
    """A tenant of 9,950 users, 25 of them frozen, and the 10,000-entry body with 100 bad
    entries: 25 unknown users, 25 frozen accounts, 25 bad amounts, 25 duplicates."""
    async with client_factory() as client:
        tenant = await create_tenant(client)
        users = [f"user-{i:05d}" for i in range(BIG - 50)]
        for start in range(0, len(users), 5000):
            result = await import_users(client, tenant["id"], users[start : start + 5000])
            assert result["failed"] == []
        frozen = users[:25]
        for external_id in frozen:
            await _freeze(client, tenant["id"], external_id)
    bad_amounts: list[Any] = [0, -1, 1.5, "10", True, None, 10**12 + 1, [], {"n": 1}] * 3
    entries: list[dict[str, Any]] = []
    expected: dict[int, str] = {}
    good = iter(users[25:])
    for i in range(BIG):
        slot = i % 100
        if slot == 10 and len([c for c in expected.values() if c == "UserNotFound"]) < 25:
            entries.append({"user": f"ghost-{i}", "amount": 3})
            expected[i] = "UserNotFound"
        elif slot == 20 and len([c for c in expected.values() if c == "AccountFrozen"]) < 25:
            entries.append({"user": frozen[i // 100 % 25], "amount": 3})
            expected[i] = "AccountFrozen"
        elif slot == 30 and len([c for c in expected.values() if c == "InvalidAmount"]) < 25:
            entries.append({"user": next(good), "amount": bad_amounts[i // 100 % 27]})
            expected[i] = "InvalidAmount"
        elif slot == 40 and len([c for c in expected.values() if c == "DuplicateEntry"]) < 25:
            entries.append({"user": entries[i - 1]["user"], "amount": 3})
            expected[i] = "DuplicateEntry"
        else:
            entries.append({"user": next(good), "amount": 3})
    assert len(expected) == 100 and len(entries) == BIG
    return {"tenant": tenant, "entries": entries, "expected": expected}


@pytest.fixture(scope="module")
def client_factory(app):  # type: ignore[no-untyped-def]
    def make() -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://swapmeter.test")

    return make


def _codes(report: dict[str, Any]) -> dict[int, str]:
    return {f["index"]: f["code"] for f in report["failed_users"]}


async def test_soft_bulk_recharge_of_10000_entries_with_100_bad_applies_9900_and_reports_them(
    client, db, big_tenant
) -> None:
    tenant_id = big_tenant["tenant"]["id"]
    before = await _balances(db, tenant_id)
    response = await _post_bulk(
        client, tenant_id, {"entries": big_tenant["entries"]}, key=str(uuid.uuid4())
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "applied"
    assert (report["requested"], report["succeeded"], report["failed"]) == (BIG, 9900, 100)
    assert report["total_amount"] == 9900 * 3
    assert _codes(report) == big_tenant["expected"]
    after = await _balances(db, tenant_id)
    credited = {u for u in after if after[u][0] != before[u][0]}
    assert len(credited) == 9900
    assert all(after[u][0] - before[u][0] == 3 for u in credited)
    assert await _entries_of_batch(db, report["batch_id"]) == 9900
    verify = await _verify(client, tenant_id)
    assert verify["ok"] is True and verify["accounts_checked"] == BIG - 50 + 2


async def test_the_same_10000_entry_batch_in_atomic_mode_applies_nothing(
    client, db, big_tenant
) -> None:
    tenant_id = big_tenant["tenant"]["id"]
    before = await _balances(db, tenant_id)
    response = await _post_bulk(
        client, tenant_id, {"entries": big_tenant["entries"], "mode": "atomic"}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "rejected"
    assert (report["succeeded"], report["failed"], report["total_amount"]) == (0, 100, 0)
    assert _codes(report) == big_tenant["expected"]
    assert await _balances(db, tenant_id) == before
    assert await _entries_of_batch(db, report["batch_id"]) == 0


# -- approval -------------------------------------------------------------------------------


async def test_a_batch_over_the_threshold_waits_for_a_different_admin_to_approve_it(
    client, db
) -> None:
    tenant = await create_tenant(client)
    tid = tenant["id"]
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tid}",
        json={"approval_threshold": 1000},
        headers=await root_headers(client),
    )
    assert patched.status_code == 200, patched.text
    await import_users(client, tid, ["p1", "p2", "p3"])
    alice, bob = await create_admin(client, tid), await create_admin(client, tid)

    small = await _post_bulk(
        client, tid, {"users": ["p1"], "amount": 1000}, headers=bearer(alice["token"])
    )
    assert small.json()["status"] == "applied"  # at the threshold, not above it

    sent = await _post_bulk(
        client,
        tid,
        {"entries": [{"user": "p2", "amount": 600}, {"user": "p3", "amount": 600}]},
        headers=bearer(alice["token"]),
    )
    pending = sent.json()
    assert pending["status"] == "pending_approval"
    assert (pending["succeeded"], pending["total_amount"]) == (2, 1200)
    assert (await _balances(db, tid))["p2"] == (0, 0)
    url = f"/api/v1/admin/tenants/{tid}/recharges/{pending['batch_id']}"
    assert (await client.get(url, headers=bearer(alice["token"]))).json()["status"] == (
        "pending_approval"
    )

    own = await client.post(url + "/approve", headers=bearer(alice["token"]))
    assert own.status_code == 403 and own.json()["error"]["code"] == "Forbidden"
    await _freeze(client, tid, "p3")  # re-checked at approval time

    approved = await client.post(url + "/approve", headers=bearer(bob["token"]))
    assert approved.status_code == 200, approved.text
    report = approved.json()
    assert report["status"] == "applied" and report["approved_by"] == bob["email"]
    assert (report["succeeded"], report["failed"], report["total_amount"]) == (1, 1, 600)
    assert [(f["user"], f["code"]) for f in report["failed_users"]] == [("p3", "AccountFrozen")]
    balances = await _balances(db, tid)
    assert (balances["p2"], balances["p3"]) == ((600, 0), (0, 0))

    twice = await client.post(url + "/approve", headers=bearer(bob["token"]))
    assert twice.status_code == 200 and twice.json() == report
    assert (await _balances(db, tid))["p2"] == (600, 0)
    log = await client.get(
        "/api/v1/admin/audit-log",
        params={"tenant_id": tid, "action": "recharge.*"},
        headers=await root_headers(client),
    )
    actions = sorted(item["action"] for item in log.json()["items"])
    assert actions == ["recharge.approve", "recharge.bulk", "recharge.bulk"]
    assert (await _verify(client, tid))["ok"] is True


async def _pending_tenant(client: httpx.AsyncClient, users: list[str]) -> tuple[str, dict, dict]:
    """A tenant with a 10-Token approval threshold, ``users`` and two tenant admins."""
    tid = (await create_tenant(client))["id"]
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tid}",
        json={"approval_threshold": 10},
        headers=await root_headers(client),
    )
    assert patched.status_code == 200, patched.text
    await import_users(client, tid, users)
    return tid, await create_admin(client, tid), await create_admin(client, tid)


async def test_approving_a_rejected_batch_is_409_and_credits_nothing(client, db) -> None:
    tid, alice, bob = await _pending_tenant(client, ["r1", "r2"])
    # Rejected at submit: atomic, with an unknown user.
    sent = await _post_bulk(
        client,
        tid,
        {"users": ["r1", "ghost"], "amount": 50, "mode": "atomic"},
        headers=bearer(alice["token"]),
    )
    assert sent.json()["status"] == "rejected"
    url = f"/api/v1/admin/tenants/{tid}/recharges/{sent.json()['batch_id']}"
    refused = await client.post(url + "/approve", headers=bearer(bob["token"]))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "Conflict"

    # Rejected at approval: atomic, and a user frozen while it waited.
    sent = await _post_bulk(
        client,
        tid,
        {"users": ["r1", "r2"], "amount": 50, "mode": "atomic"},
        headers=bearer(alice["token"]),
    )
    assert sent.json()["status"] == "pending_approval"
    url = f"/api/v1/admin/tenants/{tid}/recharges/{sent.json()['batch_id']}"
    await _freeze(client, tid, "r2")
    first = await client.post(url + "/approve", headers=bearer(bob["token"]))
    assert first.status_code == 200 and first.json()["status"] == "rejected"
    again = await client.post(url + "/approve", headers=await root_headers(client))
    assert again.status_code == 409 and again.json()["error"]["code"] == "Conflict"
    assert (await client.get(url, headers=bearer(bob["token"]))).json() == first.json()
    assert await _balances(db, tid) == {"r1": (0, 0), "r2": (0, 0)}


async def test_failures_found_at_approval_carry_the_entrys_index_in_the_request(client) -> None:
    # Imported in this order, so account ids run w1 < w2 < w3 < w4: the request below is
    # in another order, and each failure must name its place in the request.
    tid, alice, bob = await _pending_tenant(client, ["w1", "w2", "w3", "w4"])
    entries = [
        {"user": "w4", "amount": 20},
        {"user": "ghost", "amount": 20},  # found at submit
        {"user": "w2", "amount": 20},  # frozen before approval
        {"user": "w3", "amount": 20},
        {"user": "w1", "amount": 20},  # frozen before approval
    ]
    sent = await _post_bulk(client, tid, {"entries": entries}, headers=bearer(alice["token"]))
    assert sent.json()["status"] == "pending_approval"
    await _freeze(client, tid, "w2")
    await _freeze(client, tid, "w1")
    url = f"/api/v1/admin/tenants/{tid}/recharges/{sent.json()['batch_id']}"
    approved = await client.post(url + "/approve", headers=bearer(bob["token"]))
    assert approved.status_code == 200, approved.text
    report = approved.json()
    assert (report["status"], report["succeeded"], report["total_amount"]) == ("applied", 2, 40)
    assert [(f["index"], f["user"], f["code"]) for f in report["failed_users"]] == [
        (1, "ghost", "UserNotFound"),
        (2, "w2", "AccountFrozen"),
        (4, "w1", "AccountFrozen"),
    ]
    assert (await client.get(url, headers=bearer(bob["token"]))).json() == report


async def test_approving_an_unknown_batch_is_not_found(client) -> None:
    tenant = await create_tenant(client)
    response = await client.post(
        f"/api/v1/admin/tenants/{tenant['id']}/recharges/{uuid.uuid4()}/approve",
        headers=await root_headers(client),
    )
    assert response.status_code == 404


# -- verification ---------------------------------------------------------------------------


async def test_verify_reports_a_balance_tampered_in_sql_for_that_tenant_only(client, db) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["t1"])
    await _post_bulk(client, tenant["id"], {"users": ["t1"], "amount": 40})
    async with db.session() as s:
        await s.execute(
            text(
                "UPDATE accounts SET balance = balance + 7 WHERE user_id = "
                "(SELECT id FROM users WHERE tenant_id = :t AND external_id = 't1')"
            ),
            {"t": tenant["id"]},
        )
    try:
        report = await _verify(client, tenant["id"])
        assert report["ok"] is False and report["audit_chain_ok"] is True
        assert {(m["check"], m["stored"], m["recomputed"]) for m in report["mismatches"]} == {
            ("balance", 47, 40),
            ("zero_sum", 7, 0),
        }
        assert {m["tenant_id"] for m in report["mismatches"]} == {tenant["id"]}
        everything = await _verify(client)
        assert any(m["tenant_id"] == tenant["id"] for m in everything["mismatches"])
    finally:
        async with db.session() as s:
            await s.execute(
                text(
                    "UPDATE accounts SET balance = balance - 7 WHERE user_id = "
                    "(SELECT id FROM users WHERE tenant_id = :t AND external_id = 't1')"
                ),
                {"t": tenant["id"]},
            )
    assert (await _verify(client, tenant["id"]))["ok"] is True


async def test_tenant_admins_verify_their_own_tenant_and_get_404_for_another(client) -> None:
    mine, other = await create_tenant(client), await create_tenant(client)
    auditor = await create_admin(client, mine["id"], role="auditor")
    own = await _verify(client, headers=bearer(auditor["token"]))
    assert own["tenant_id"] == mine["id"] and own["accounts_checked"] == 2
    foreign = await client.get(
        "/api/v1/admin/ledger/verify",
        params={"tenant_id": other["id"]},
        headers=bearer(auditor["token"]),
    )
    assert foreign.status_code == 404


# -- end users ------------------------------------------------------------------------------


async def test_end_users_read_their_balance_ledger_pages_and_price_book(client, db) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["reader"])
    key = (await create_api_key(client, tenant["id"], "reader"))["key"]
    headers = {"Authorization": f"Bearer {key}"}
    await _post_bulk(client, tenant["id"], {"users": ["reader"], "amount": 30})
    async with db.session() as s:
        user_id = (
            await s.execute(
                text("SELECT id FROM users WHERE tenant_id = :t AND external_id = 'reader'"),
                {"t": tenant["id"]},
            )
        ).scalar_one()
        await holds.hold(s, uuid.UUID(tenant["id"]), user_id, "job-1", 10)
    async with db.session() as s:
        await holds.capture(s, uuid.UUID(tenant["id"]), "job-1", 4)

    balance = await client.get("/api/v1/balance", headers=headers)
    assert balance.json() == {"balance": 26, "held": 0, "available": 26, "expiring": []}
    also = await client.get("/api/v1/balance", headers={"X-API-Key": key})
    assert also.json() == balance.json()

    first = (await client.get("/api/v1/ledger", params={"limit": 2}, headers=headers)).json()
    assert [(i["kind"], i["amount"], i["balance_after"]) for i in first["items"]] == [
        ("release", 6, 26),
        ("capture", -4, 26),
    ]
    second = (
        await client.get(
            "/api/v1/ledger", params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    assert [(i["kind"], i["amount"], i["balance_after"]) for i in second["items"]] == [
        ("hold", -10, 30),
        ("recharge", 30, 30),
    ]
    assert second["next_cursor"] is None
    for cursor in ("abc", "-5", "0", str(2**63), "99999999999999999999"):
        bad = await client.get("/api/v1/ledger", params={"cursor": cursor}, headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidCursor", cursor

    prices = (await client.get("/api/v1/pricing", headers=headers)).json()
    assert (prices["image"], prices["video_second"]) == (1, 10)
    assert "enhance_surcharge" in prices
    assert (await client.get("/api/v1/balance")).status_code == 401


async def test_metrics_count_bulk_batches_failed_entries_and_tokens_moved(client) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["m1"])
    await _post_bulk(client, tenant["id"], {"users": ["m1", "nobody"], "amount": 9})
    body = (await client.get("/metrics")).text
    assert 'swapmeter_bulk_recharge_batches_total{status="applied"}' in body
    assert 'swapmeter_bulk_recharge_failed_entries_total{code="UserNotFound"}' in body
    line = f'swapmeter_tokens_moved_total{{kind="recharge",tenant="{tenant["id"]}"}} 9.0'
    assert line in body


async def test_absurd_numbers_in_one_entry_fail_that_entry_only(client, db) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["a", "b", "c"])
    body = (
        b'{"entries": [{"user": "a", "amount": 1e400}, {"user": "b", "amount": '
        b'100000000000000000000000000}, {"user": "c", "amount": 2}]}'
    )
    headers = {**await root_headers(client), "Content-Type": "application/json"}
    response = await client.post(_bulk_url(tenant["id"]), content=body, headers=headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert [(f["user"], f["code"]) for f in report["failed_users"]] == [
        ("a", "InvalidAmount"),
        ("b", "InvalidAmount"),
    ]
    assert (await _balances(db, tenant["id"]))["c"] == (2, 0)


async def test_user_names_the_database_cannot_store_fail_that_entry_only(client, db) -> None:
    """A NUL or an unpaired surrogate in one entry's user: that entry is reported (shown
    escaped), the others are applied; never a 500 for the whole batch."""
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["a"])
    body = (
        b'{"entries": [{"user": "a\\u0000b", "amount": 1}, {"user": "\\ud800", "amount": 1},'
        b' {"user": "a", "amount": 3}]}'
    )
    headers = {**await root_headers(client), "Content-Type": "application/json"}
    response = await client.post(_bulk_url(tenant["id"]), content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert [(f["user"], f["code"]) for f in response.json()["failed_users"]] == [
        ("a\\x00b", "InvalidEntry"),
        ("\\ud800", "InvalidEntry"),
    ]
    assert (await _balances(db, tenant["id"]))["a"] == (3, 0)


async def test_a_nul_in_any_text_field_is_400_invalid_text_not_500(client) -> None:
    headers = {**await root_headers(client), "Content-Type": "application/json"}
    created = await client.post(
        "/api/v1/admin/tenants", content=b'{"name": "a\\u0000b", "slug": "nul-name"}',
        headers=headers,
    )  # fmt: skip
    tenant = await create_tenant(client)
    priced = await client.put(
        f"/api/v1/admin/tenants/{tenant['id']}/pricing",
        content=b'{"image": 2, "reason": "a\\u0000b"}', headers=headers,
    )  # fmt: skip
    for response in (created, priced):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "InvalidText"


async def test_a_recharge_past_the_largest_storable_balance_is_refused_and_applies_nothing(
    client, db
) -> None:
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["t1"])
    await _post_bulk(client, tenant["id"], {"users": ["t1"], "amount": 40})
    issuance = "UPDATE accounts SET balance = :b WHERE tenant_id = :t AND kind = 'issuance'"
    async with db.session() as s:  # as if 9.2 quintillion Tokens had been issued already
        await s.execute(text(issuance), {"b": -(2**63) + 5, "t": tenant["id"]})
    try:
        response = await client.post(
            f"/api/v1/admin/tenants/{tenant['id']}/recharges/bulk",
            json={"users": ["t1"], "amount": 10},
            headers=await root_headers(client),
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "InvalidAmount"
        assert "nothing was applied" in response.json()["error"]["message"]
    finally:
        async with db.session() as s:
            await s.execute(text(issuance), {"b": -40, "t": tenant["id"]})
    assert (await _verify(client, tenant["id"]))["ok"] is True  # the user still has 40
