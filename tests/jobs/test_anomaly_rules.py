"""Anomaly rules on POST /swap-face, end to end: real engine, real holds, an in-process
worker, the rules counted in the real Redis.

Each test makes its own customer (tenant, user, key, Tokens), sets its tenant's rules and
checks what the customer and the tenant's admins see: the answers, the balance and the
ledger, the review queue, the audit log, the tenant's webhook.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import cv2
import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.webhooks.signing import SIGNATURE_HEADER, verify
from tests.admin.helpers import root_headers
from tests.jobs.conftest import (
    Customer,
    LocalServer,
    balance,
    client_for,
    face,
    gradient_png,
    job_settings,
    ledger_kinds,
    make_customer,
    running_app,
    verify_ledger,
)

OBAMA = face("obama.jpg")
TARGET = face("obama_small.jpg")
BIDEN = face("biden.jpg")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def reencoded(data: bytes, quality: int) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
async def anomaly_app(
    settings, tmp_path_factory, local_server: LocalServer
) -> AsyncIterator[FastAPI]:
    configured = job_settings(
        settings,
        tmp_path_factory.mktemp("anomaly"),
        url_fetch_allow_hosts=local_server.allow,
        jobs_max_body_bytes=4 * 1024 * 1024,
    )
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(anomaly_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(anomaly_app) as client:
        yield client


async def swap(api: httpx.AsyncClient, customer: Customer, source: bytes = OBAMA) -> httpx.Response:
    return await api.post(
        "/api/v1/swap-face",
        json={"source": b64(source), "target": b64(TARGET)},
        headers=customer.headers,
    )


async def faceless_swap(api: httpx.AsyncClient, customer: Customer) -> httpx.Response:
    """A swap that fails at once (no face in the target): its hold is released."""
    return await api.post(
        "/api/v1/swap-face",
        json={"source": b64(OBAMA), "target": b64(gradient_png())},
        headers=customer.headers,
    )


async def put_rules(api: httpx.AsyncClient, customer: Customer, **rules: Any) -> dict[str, Any]:
    response = await api.put(
        f"/api/v1/admin/tenants/{customer.tenant_id}/anomaly-rules",
        json=rules,
        headers=await root_headers(api),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def flags(api: httpx.AsyncClient, customer: Customer, **params: str) -> list[dict[str, Any]]:
    response = await api.get(
        f"/api/v1/admin/tenants/{customer.tenant_id}/flags",
        params=params,
        headers=await root_headers(api),
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def resolve(
    api: httpx.AsyncClient, customer: Customer, flag_id: int, action: str
) -> httpx.Response:
    return await api.post(
        f"/api/v1/admin/tenants/{customer.tenant_id}/flags/{flag_id}/resolve",
        json={"action": action, "note": "reviewed"},
        headers=await root_headers(api),
    )


async def audit_actions(api: httpx.AsyncClient, customer: Customer) -> list[dict[str, Any]]:
    response = await api.get(
        "/api/v1/admin/audit-log",
        params={"tenant_id": customer.tenant_id, "limit": 200},
        headers=await root_headers(api),
    )
    assert response.status_code == 200, response.text
    return [i for i in response.json()["items"] if i["action"].startswith("anomaly.")]


async def holds_of(db, customer: Customer) -> int:  # type: ignore[no-untyped-def]
    async with db.session() as s:
        return int(
            (
                await s.execute(
                    text(
                        "SELECT count(*) FROM holds h JOIN accounts a ON a.id = h.account_id "
                        "WHERE a.user_id = :u"
                    ),
                    {"u": customer.user_id},
                )
            ).scalar_one()
        )


def breaches_metric(api: httpx.AsyncClient, rule: str, action: str) -> float:
    from app.jobs.anomaly.metrics import BREACHES

    return BREACHES.labels(rule, action)._value.get()


# -- the acceptance: the same source face, re-encoded ------------------------------------------


async def test_the_fourth_swap_of_one_face_reencoded_freezes_the_user_and_unfreeze_lets_it_through(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    rules = await put_rules(api, customer, max_same_source_per_hour=3, action="freeze")
    assert rules["max_same_source_per_hour"] == 3 and rules["action"] == "freeze"
    for quality in (95, 90, 85):
        response = await swap(api, customer, reencoded(OBAMA, quality))
        assert response.status_code == 200, response.text
    assert await balance(api, customer) == {"balance": 7, "held": 0, "available": 7}
    holds_before = await holds_of(db, customer)
    breaches_before = breaches_metric(api, "same_source_per_hour", "freeze")

    fourth = await swap(api, customer, reencoded(OBAMA, 60))
    assert fourth.status_code == 403, fourth.text
    error = fourth.json()["error"]
    assert error["code"] == "AccountFrozen" and "same_source_per_hour" in error["message"]
    # Nothing held: the balance as before, no hold, no job.
    assert await balance(api, customer) == {"balance": 7, "held": 0, "available": 7}
    assert await holds_of(db, customer) == holds_before
    assert [k for k, _ in await ledger_kinds(api, customer)].count("hold") == 3
    user = await api.get(
        f"/api/v1/admin/tenants/{customer.tenant_id}/users/{customer.external_id}",
        headers=await root_headers(api),
    )
    assert user.json()["status"] == "frozen"

    (flag,) = await flags(api, customer, status="open")
    assert (flag["user"], flag["rule"], flag["observed"], flag["limit"]) == (
        customer.external_id,
        "same_source_per_hour",
        4,
        3,
    )
    assert flag["status"] == "open" and flag["action"] == "freeze"
    evidence = flag["evidence"]
    assert evidence["window_seconds"] == 3600 and len(evidence["source_hash"]) == 16
    assert evidence["request_id"] == fourth.json()["error"]["request_id"]
    assert breaches_metric(api, "same_source_per_hour", "freeze") == breaches_before + 1
    breach_audit = [
        a for a in await audit_actions(api, customer) if a["action"] == "anomaly.breach"
    ]
    assert len(breach_audit) == 1 and breach_audit[0]["details"]["flag_id"] == flag["id"]

    # Frozen: the next swap is refused by the freeze, and no second flag appears.
    assert (await swap(api, customer)).status_code == 403
    assert len(await flags(api, customer)) == 1

    resolved = await resolve(api, customer, flag["id"], "unfreeze")
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolution"] == "unfreeze"
    assert await flags(api, customer, status="open") == []
    # The next swap, the same face again, goes through: the windows started afresh.
    after = await swap(api, customer, reencoded(OBAMA, 60))
    assert after.status_code == 200, after.text
    assert await balance(api, customer) == {"balance": 6, "held": 0, "available": 6}
    assert [a["action"] for a in await audit_actions(api, customer)].count("anomaly.resolve") == 1
    assert (await resolve(api, customer, flag["id"], "unfreeze")).status_code == 409
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_different_faces_do_not_count_as_the_same_source(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    await put_rules(api, customer, max_same_source_per_hour=1, action="freeze")
    assert (await swap(api, customer, OBAMA)).status_code == 200
    assert (await swap(api, customer, BIDEN)).status_code == 200
    assert await flags(api, customer) == []


# -- requests per minute, Tokens per day, the flag action --------------------------------------


async def test_a_flag_rule_lets_the_swap_through_and_records_one_open_flag(
    api, db, local_server: LocalServer
) -> None:
    customer = await make_customer(api, db, tokens=10)
    hook = local_server.url(f"/tenant-hooks/{customer.external_id}")
    patched = await api.patch(
        f"/api/v1/admin/tenants/{customer.tenant_id}",
        json={"webhook_url": hook},
        headers=await root_headers(api),
    )
    assert patched.status_code == 200 and patched.json()["webhook_url"] == hook
    await put_rules(api, customer, max_requests_per_minute=2, action="flag")
    answers = [(await faceless_swap(api, customer)).status_code for _ in range(4)]
    assert answers == [400] * 4  # all four ran (no face): none refused by the rule
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    (flag,) = await flags(api, customer)
    assert (flag["rule"], flag["observed"], flag["limit"], flag["action"]) == (
        "requests_per_minute",
        3,
        2,
        "flag",
    )
    user = await api.get(
        f"/api/v1/admin/tenants/{customer.tenant_id}/users/{customer.external_id}",
        headers=await root_headers(api),
    )
    assert user.json()["status"] == "active"

    _, headers, body = (await local_server.posted(f"/tenant-hooks/{customer.external_id}"))[0]
    secret = await api.get(
        f"/api/v1/admin/tenants/{customer.tenant_id}/webhook-secret",
        headers=await root_headers(api),
    )
    signature = next(v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower())
    assert verify(secret.json()["secret"], signature, body)
    payload = orjson.loads(body)
    assert payload["type"] == "anomaly.flag" and payload["flag"]["id"] == flag["id"]
    assert payload["flag"]["rule"] == "requests_per_minute"


async def test_keep_frozen_on_a_flag_freezes_the_user_and_closes_the_flag(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    await put_rules(api, customer, max_requests_per_minute=1, action="flag")
    for _ in range(2):
        await faceless_swap(api, customer)
    (flag,) = await flags(api, customer, status="open")
    kept = await resolve(api, customer, flag["id"], "keep_frozen")
    assert kept.status_code == 200 and kept.json()["resolution"] == "keep_frozen"
    refused = await faceless_swap(api, customer)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AccountFrozen"
    # Refused by the freeze: no new flag, though the rule is still broken.
    assert await flags(api, customer, status="open") == []
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}


async def test_tokens_per_day_freezes_at_the_swap_that_would_pass_the_limit(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    await put_rules(api, customer, max_tokens_per_day=2, action="freeze")
    assert [(await faceless_swap(api, customer)).status_code for _ in range(2)] == [400, 400]
    third = await faceless_swap(api, customer)
    assert third.status_code == 403 and third.json()["error"]["code"] == "AccountFrozen"
    (flag,) = await flags(api, customer)
    assert (flag["rule"], flag["observed"], flag["limit"]) == ("tokens_per_day", 3, 2)
    assert flag["evidence"]["tokens"] == 1 and flag["evidence"]["window_seconds"] == 86400
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert [k for k, _ in await ledger_kinds(api, customer)].count("hold") == 2


async def test_requests_per_minute_with_freeze_refuses_the_breaching_swap(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    await put_rules(api, customer, max_requests_per_minute=2, action="freeze")
    assert [(await faceless_swap(api, customer)).status_code for _ in range(2)] == [400, 400]
    refused = await faceless_swap(api, customer)
    assert refused.status_code == 403
    (flag,) = await flags(api, customer)
    assert (flag["rule"], flag["observed"], flag["limit"]) == ("requests_per_minute", 3, 2)
    # Turning the rules off and unfreezing: swaps go through again.
    await put_rules(api, customer, action="flag")
    assert (await resolve(api, customer, flag["id"], "unfreeze")).status_code == 200
    assert (await swap(api, customer)).status_code == 200


async def test_a_user_frozen_by_hand_is_refused_without_a_flag(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    await put_rules(api, customer, max_requests_per_minute=1, action="freeze")
    frozen = await api.post(
        f"/api/v1/admin/tenants/{customer.tenant_id}/users/{customer.external_id}/freeze",
        json={"reason": "chargeback"},
        headers=await root_headers(api),
    )
    assert frozen.status_code == 200
    for _ in range(3):
        response = await faceless_swap(api, customer)
        assert response.status_code == 403 and response.json()["error"]["code"] == "AccountFrozen"
    assert await flags(api, customer) == []


# -- the cost on the swap path -------------------------------------------------------------------


async def test_a_swap_that_breaks_nothing_costs_one_redis_call_and_no_anomaly_query(
    api, db, anomaly_app
) -> None:
    from sqlalchemy import event

    from app.jobs.anomaly import counters

    customer = await make_customer(api, db, tokens=10)
    await put_rules(
        api,
        customer,
        max_requests_per_minute=100,
        max_same_source_per_hour=100,
        max_tokens_per_day=100,
        action="freeze",
    )
    assert (await swap(api, customer)).status_code == 200
    redis = anomaly_app.state.ratelimit_redis
    database = anomaly_app.state.db
    scripts: list[str] = []
    statements: list[str] = []
    original = redis.evalsha

    async def counting(sha, *args):  # type: ignore[no-untyped-def]
        scripts.append(sha)
        return await original(sha, *args)

    def note(conn, cursor, statement, *rest) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engines = [database.engine.sync_engine, database._autocommit_engine.sync_engine]
    redis.evalsha = counting
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        assert (await swap(api, customer, reencoded(OBAMA, 70))).status_code == 200
    finally:
        del redis.evalsha
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)
    assert scripts.count(counters._CHECK_SHA) == 1
    assert statements and not [s for s in statements if "anomaly" in s]
