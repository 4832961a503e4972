"""Strict where money is concerned (issue 14): Token amounts are JSON integers, times are
RFC 3339 strings, bodies are the media type a route reads (415 otherwise), text holds no
control characters, and a query parameter is one the route knows, given once."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.admin.helpers import create_tenant, root_headers
from tests.jobs.conftest import make_customer

TENANTS = "/api/v1/admin/tenants"
AUDIT = "/api/v1/admin/audit-log"


def _code(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.parametrize("threshold", [True, "5", 5.0, 0, -1, 10**12 + 1, [5], {"n": 5}])
async def test_an_approval_threshold_that_is_not_an_integer_in_range_is_invalid_amount(
    client, threshold
) -> None:
    tenant = await create_tenant(client)
    headers = await root_headers(client)
    url = f"{TENANTS}/{tenant['id']}"
    answer = await client.patch(url, json={"approval_threshold": threshold}, headers=headers)
    assert _code(answer) == (400, "InvalidAmount"), answer.text
    assert "approval_threshold" in answer.json()["error"]["message"]
    stored = await client.get(url, headers=headers)
    assert stored.json()["approval_threshold"] is None  # nothing was stored


async def test_an_integer_threshold_or_null_is_stored(client) -> None:
    tenant = await create_tenant(client)
    headers = await root_headers(client)
    url = f"{TENANTS}/{tenant['id']}"
    answer = await client.patch(url, json={"approval_threshold": 5}, headers=headers)
    assert answer.status_code == 200 and answer.json()["approval_threshold"] == 5
    answer = await client.patch(url, json={"approval_threshold": None}, headers=headers)
    assert answer.status_code == 200 and answer.json()["approval_threshold"] is None


@pytest.mark.parametrize(
    "since", ["0.5", "1700000000", "2026-01-01", "yesterday", "2026-01-01T00:00"]
)
async def test_a_since_that_is_not_an_rfc3339_time_is_invalid_time(client, since) -> None:
    answer = await client.get(AUDIT, params={"since": since}, headers=await root_headers(client))
    assert _code(answer) == (400, "InvalidTime"), answer.text


@pytest.mark.parametrize(
    "since", ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5+02:00", "2026-01-01 00:00:00"]
)
async def test_an_rfc3339_since_is_taken(client, since) -> None:
    answer = await client.get(AUDIT, params={"since": since}, headers=await root_headers(client))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/json; charset=latin1", "application/x-www-form-urlencoded"],
)
async def test_a_json_body_not_sent_as_utf8_json_is_refused_and_creates_nothing(
    client, content_type
) -> None:
    slug = f"t-{uuid.uuid4().hex[:8]}"
    headers = dict(await root_headers(client))
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"name": "Acme", "slug": slug}).encode()
    answer = await client.post(TENANTS, content=body, headers=headers)
    assert _code(answer) == (415, "UnsupportedMediaType"), answer.text
    listed = await client.get(TENANTS, params={"limit": 500}, headers=await root_headers(client))
    assert slug not in {t["slug"] for t in listed.json()["items"]}


async def test_a_utf8_json_body_is_read(client) -> None:
    headers = {**await root_headers(client), "Content-Type": "application/json; charset=UTF-8"}
    body = json.dumps({"name": "Acme", "slug": f"t-{uuid.uuid4().hex[:8]}"}).encode()
    assert (await client.post(TENANTS, content=body, headers=headers)).status_code == 201


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin1"])
async def test_a_swap_body_not_sent_as_json_or_multipart_is_neither_run_nor_charged(
    client, db, content_type
) -> None:
    customer = await make_customer(client, db, tokens=10)
    headers = {"Authorization": f"Bearer {customer.key}"}
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"source": "aGVsbG8=", "target": "aGVsbG8="}).encode()
    answer = await client.post("/api/v1/swap-face", content=body, headers=headers)
    assert _code(answer) == (415, "UnsupportedMediaType"), answer.text
    balance = (await client.get("/api/v1/balance", headers=headers)).json()
    assert (balance["balance"], balance["held"]) == (10, 0)
    jobs = await client.get("/api/v1/jobs", headers=headers)
    assert jobs.json()["items"] == []


@pytest.mark.parametrize("reason", ["x\x00y", "bell\x07", "esc\x1b[31m", "del\x7f", "c1\x85"])
async def test_a_control_character_in_a_reason_is_invalid_text(client, db, reason) -> None:
    customer = await make_customer(client, db, tokens=0)
    url = f"{TENANTS}/{customer.tenant_id}/users/{customer.external_id}/freeze"
    answer = await client.post(url, json={"reason": reason}, headers=await root_headers(client))
    assert _code(answer) == (400, "InvalidText"), answer.text
    user = await client.get(url.removesuffix("/freeze"), headers=await root_headers(client))
    assert user.json()["status"] == "active"


async def test_tabs_and_line_breaks_are_text(client, db) -> None:
    customer = await make_customer(client, db, tokens=0)
    url = f"{TENANTS}/{customer.tenant_id}/users/{customer.external_id}/freeze"
    reason = "fraud report\r\n\tticket 42"
    answer = await client.post(url, json={"reason": reason}, headers=await root_headers(client))
    assert answer.status_code == 200 and answer.json()["status"] == "frozen"


async def test_an_unknown_or_repeated_query_parameter_is_refused(client) -> None:
    headers = await root_headers(client)
    misspelt = await client.get(AUDIT, params={"tenantid": str(uuid.uuid4())}, headers=headers)
    assert _code(misspelt) == (422, "ValidationError")
    assert "tenantid" in misspelt.json()["error"]["message"]
    twice = await client.get(f"{AUDIT}?limit=1&limit=2", headers=headers)
    assert _code(twice) == (422, "ValidationError")


async def test_a_tenant_named_without_latin_letters_gets_a_slug(client) -> None:
    answer = await client.post(TENANTS, json={"name": "회사"}, headers=await root_headers(client))
    assert answer.status_code == 201, answer.text
    assert answer.json()["slug"].startswith("tenant-")
