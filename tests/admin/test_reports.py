"""Reports: the user list, daily usage (JSON and CSV) and the ledger export, against the
ledger itself after a mixed day of a tenant (real swaps through an in-process worker)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import Database
from billing import holds
from billing import service as billing
from billing.maintenance import fold_usage
from tests.admin.helpers import (
    bearer,
    create_admin,
    create_tenant,
    import_users,
    root_headers,
)
from tests.jobs.conftest import (
    Customer,
    client_for,
    face,
    gradient_png,
    job_settings,
    make_customer,
    running_app,
    verify_ledger,
)

TODAY = datetime.now(UTC).date()
SOURCE = base64.b64encode(face("obama.jpg")).decode()
TARGET = base64.b64encode(face("biden.jpg")).decode()
NO_FACE = base64.b64encode(gradient_png()).decode()

TOKEN_COLUMNS = {
    "recharged": "recharge",
    "granted": "grant",
    "consumed": "capture",
    "released": "release",
    "refunded": "refund",
    "expired": "expire",
}


@pytest.fixture(scope="module")
async def report_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    configured = job_settings(settings, tmp_path_factory.mktemp("reports"))
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(report_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(report_app) as client:
        yield client


def _range(first: date = TODAY, last: date = TODAY) -> dict[str, str]:
    return {"from": first.isoformat(), "to": last.isoformat()}


async def _swap(api: httpx.AsyncClient, customer: Customer, target: str, **headers: str) -> Any:
    return await api.post(
        "/api/v1/swap-face",
        json={"source": SOURCE, "target": target},
        headers={**customer.headers, **headers},
    )


async def _ledger_by_kind(db: Database, tenant_id: str) -> dict[str, tuple[int, int]]:
    """kind -> (entries, Tokens) of the tenant's entries made today, straight from the
    ledger (adjustments signed: a debit of the user counts negative)."""
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT e.kind, count(*), sum(CASE WHEN e.kind = 'adjustment' AND a.kind <> 'user' "
                "THEN -e.amount ELSE e.amount END) FROM ledger_entries e "
                "JOIN accounts a ON a.id = e.to_account_id "
                "WHERE e.tenant_id = :t AND (e.created_at AT TIME ZONE 'UTC')::date = :d "
                "GROUP BY e.kind"
            ),
            {"t": tenant_id, "d": TODAY},
        )
        return {kind: (int(n), int(tokens)) for kind, n, tokens in rows}


async def _mixed_day(api: httpx.AsyncClient, db: Database) -> Customer:
    """Recharges, a swap that succeeds, one that fails, one canceled, a grant that
    expires, adjustments both ways and a refund, for one tenant."""
    customer = await make_customer(api, db, tokens=30)
    tenant = uuid.UUID(customer.tenant_id)
    ok = await _swap(api, customer, TARGET)
    assert ok.status_code == 200, ok.text
    failed = await _swap(api, customer, NO_FACE)
    assert failed.status_code == 400 and failed.json()["error"]["code"] == "NoFaceDetected"
    queued = await _swap(api, customer, TARGET, Prefer="wait=0")
    assert queued.status_code == 202, queued.text
    canceled = await api.post(
        f"/api/v1/jobs/{queued.json()['job_id']}/cancel", headers=customer.headers
    )
    assert canceled.status_code in (200, 202, 409), canceled.text
    async with db.session() as s:
        await billing.grant(
            s, tenant, customer.user_id, 4, expires_at=datetime.now(UTC) + timedelta(seconds=1)
        )
        await billing.adjust(s, tenant, customer.user_id, 5, reason="goodwill", operator="t")
        await billing.adjust(s, tenant, customer.user_id, -2, reason="typo", operator="t")
        await holds.refund(s, tenant, f"job:{ok.json()['job_id']}", 1, reason="blurry")
    async with db.session() as s:
        await billing.expire_grants(s, datetime.now(UTC) + timedelta(seconds=5))
    # Some of the day folded into the rollups, the rest still in deltas: both count.
    await fold_usage(db)
    async with db.session() as s:
        await billing.recharge(s, tenant, customer.user_id, 7)
    await _wait_for_jobs_to_end(db, customer.tenant_id)
    return customer


async def _wait_for_jobs_to_end(db: Database, tenant_id: str) -> None:
    for _ in range(600):
        async with db.session() as s:
            open_jobs = (
                await s.execute(
                    text(
                        "SELECT count(*) FROM jobs WHERE tenant_id = :t "
                        "AND status IN ('queued', 'processing')"
                    ),
                    {"t": tenant_id},
                )
            ).scalar_one()
        if not open_jobs:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the tenant's jobs did not end in 60 s")


async def test_usage_and_export_of_a_mixed_day_add_up_to_the_ledger(api, db) -> None:
    customer = await _mixed_day(api, db)
    headers = await root_headers(api)
    base = f"/api/v1/admin/tenants/{customer.tenant_id}"
    ledger = await _ledger_by_kind(db, customer.tenant_id)
    assert {"recharge", "grant", "capture", "release", "refund", "expire", "adjustment"} <= set(
        ledger
    )

    report = await api.get(f"{base}/usage", params=_range(), headers=headers)
    assert report.status_code == 200, report.text
    (day,) = report.json()["items"]
    assert day["day"] == TODAY.isoformat()
    for column, kind in TOKEN_COLUMNS.items():
        assert day[column] == ledger[kind][1], column
    assert day["adjusted"] == ledger["adjustment"][1] == 3
    async with db.session() as s:
        jobs = Counter(
            {
                (kind, status): n
                for kind, status, n in await s.execute(
                    text(
                        "SELECT kind, status, count(*) FROM jobs WHERE tenant_id = :t GROUP BY 1, 2"
                    ),
                    {"t": customer.tenant_id},
                )
            }
        )
    assert day["images_succeeded"] == jobs["image", "succeeded"] >= 1
    assert day["images_failed"] == jobs["image", "failed"] >= 1
    assert (day["videos_succeeded"], day["videos_failed"], day["video_seconds"]) == (0, 0, 0)
    assert day["active_users"] == 1

    as_csv = await api.get(
        f"{base}/usage", params=_range(), headers={**headers, "Accept": "text/csv"}
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {k: str(v) for k, v in day.items()} == {
        k: v if k != "video_seconds" else str(float(v)) for k, v in row.items()
    }

    export = await api.get(f"{base}/ledger/export", params=_range(), headers=headers)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    entries = list(csv.DictReader(io.StringIO(export.text)))
    assert list(entries[0]) == [
        "id", "at", "user", "kind", "amount", "balance_after", "reference", "batch_id", "job_id"
    ]  # fmt: skip
    exported: dict[str, list[int]] = {}
    for e in entries:
        count_tokens = exported.setdefault(e["kind"], [0, 0])
        count_tokens[0] += 1
        count_tokens[1] += int(e["amount"])
    assert {k: v[0] for k, v in exported.items()} == {k: v[0] for k, v in ledger.items()}
    for column, kind in TOKEN_COLUMNS.items():
        assert exported[kind][1] == day[column], column
    assert all(e["user"] == customer.external_id for e in entries)
    assert {e["job_id"] for e in entries if e["kind"] == "capture"} == {
        e["reference"].removeprefix("job:") for e in entries if e["kind"] == "capture"
    }
    assert any(e["batch_id"] for e in entries if e["kind"] == "recharge")

    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_a_day_without_activity_is_a_row_of_zeros_and_days_come_in_order(api, db) -> None:
    tenant = await create_tenant(api)
    headers = await root_headers(api)
    first = TODAY - timedelta(days=2)
    report = await api.get(
        f"/api/v1/admin/tenants/{tenant['id']}/usage", params=_range(first), headers=headers
    )
    items = report.json()["items"]
    assert [i["day"] for i in items] == [(first + timedelta(days=n)).isoformat() for n in range(3)]
    assert all(v == 0 for i in items for k, v in i.items() if k != "day")


async def test_a_report_whose_range_is_backwards_or_too_long_is_400(api, db) -> None:
    tenant = await create_tenant(api)
    headers = await root_headers(api)
    base = f"/api/v1/admin/tenants/{tenant['id']}"
    for path, params in (
        ("usage", _range(TODAY, TODAY - timedelta(days=1))),
        ("usage", _range(TODAY - timedelta(days=400))),
        ("ledger/export", _range(TODAY, TODAY - timedelta(days=1))),
    ):
        response = await api.get(f"{base}/{path}", params=params, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "InvalidDateRange"
    bad_date = await api.get(
        f"{base}/usage", params={"from": "2026-13-01", "to": "x"}, headers=headers
    )
    assert bad_date.status_code == 422


async def test_a_rollup_that_disagrees_with_the_ledger_fails_verify(api, db) -> None:
    customer = await make_customer(api, db, tokens=9)
    await fold_usage(db)
    tampered = {"t": customer.tenant_id, "d": TODAY}
    async with db.session() as s:
        await s.execute(
            text(
                "UPDATE usage_daily SET tokens = tokens + 1 "
                "WHERE tenant_id = :t AND day = :d AND metric = 'ledger:recharge'"
            ),
            tampered,
        )
    try:
        result = await verify_ledger(api, customer.tenant_id)
        assert result["ok"] is False
        (finding,) = [m for m in result["mismatches"] if m["check"] == "usage_rollup"]
        assert (finding["stored"], finding["recomputed"]) == (10, 9)
        assert "ledger:recharge" in finding["detail"]
    finally:
        async with db.session() as s:
            await s.execute(
                text(
                    "UPDATE usage_daily SET tokens = tokens - 1 "
                    "WHERE tenant_id = :t AND day = :d AND metric = 'ledger:recharge'"
                ),
                tampered,
            )
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


# -- the user list ---------------------------------------------------------------------------


async def _pages(
    api: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any
) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [u["external_id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


async def test_users_are_listed_by_prefix_status_and_each_sort_page_by_page(api, db) -> None:
    tenant = await create_tenant(api)
    headers = await root_headers(api)
    ids = ["ann-1", "ann-2", "ann-10", "anna", "bob", "an_x", "Ann-3", "ann-\u00e9"]
    await import_users(api, tenant["id"], ids)
    base = f"/api/v1/admin/tenants/{tenant['id']}"
    for n, external_id in enumerate(ids):
        await api.post(
            f"/api/v1/admin/tenants/{tenant['id']}/recharges/bulk",
            json={"users": [external_id], "amount": 10 + n, "reason": "t"},
            headers={**headers, "Idempotency-Key": f"r-{n}"},
        )
    frozen = await api.post(f"{base}/users/bob/freeze", json={"reason": "x"}, headers=headers)
    assert frozen.status_code == 200
    users = f"{base}/users"

    assert await _pages(api, users, headers, limit=3) == sorted(ids, key=lambda s: s.encode())
    assert await _pages(api, users, headers, q="ann-", limit=2) == [
        "ann-1", "ann-10", "ann-2", "ann-\u00e9"
    ]  # fmt: skip
    assert await _pages(api, users, headers, q="an_", limit=2) == ["an_x"]  # no LIKE wildcard
    assert await _pages(api, users, headers, q="zz") == []
    assert await _pages(api, users, headers, status="frozen") == ["bob"]
    assert await _pages(api, users, headers, sort="-balance", limit=3) == ids[::-1]
    assert await _pages(api, users, headers, sort="balance", limit=3) == ids
    by_creation = await _pages(api, users, headers, sort="created_at", limit=3)
    assert sorted(by_creation) == sorted(ids)
    assert await _pages(api, users, headers, sort="-created_at", limit=3) == by_creation[::-1]

    page = (await api.get(users, params={"limit": 1}, headers=headers)).json()
    assert page["items"][0] == {
        "external_id": "Ann-3", "balance": 16, "held": 0, "available": 16, "status": "active",
        "created_at": page["items"][0]["created_at"], "email": None, "display_name": None,
        "plan": None,
    }  # fmt: skip
    for cursor, sort in ((page["next_cursor"], "balance"), ("nonsense", "external_id")):
        bad = await api.get(users, params={"cursor": cursor, "sort": sort}, headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidCursor"


# -- who may read them -------------------------------------------------------------------------


async def test_auditors_read_reports_and_other_tenants_get_404(api, db) -> None:
    tenant = await create_tenant(api)
    other = await create_tenant(api)
    await import_users(api, tenant["id"], ["u1"])
    auditor = bearer((await create_admin(api, tenant["id"], "auditor"))["token"])
    outsider = bearer((await create_admin(api, other["id"], "tenant_admin"))["token"])
    for path, params in (("users", {}), ("usage", _range()), ("ledger/export", _range())):
        url = f"/api/v1/admin/tenants/{tenant['id']}/{path}"
        read = await api.get(url, params=params, headers=auditor)
        assert read.status_code == 200, (path, read.text)
        hidden = await api.get(url, params=params, headers=outsider)
        assert hidden.status_code == 404, (path, hidden.text)
        assert hidden.json()["error"]["code"] == "NotFound"
        anonymous = await api.get(url, params=params)
        assert anonymous.status_code == 401


async def test_the_workers_housekeeping_folds_the_deltas_into_the_daily_rollups(api, db) -> None:
    customer = await make_customer(api, db, tokens=11)
    count = text("SELECT count(*) FROM usage_deltas WHERE tenant_id = :t")
    for _ in range(100):  # housekeeping runs every 0.5 s here
        async with db.session() as s:
            left = (await s.execute(count, {"t": customer.tenant_id})).scalar_one()
        if not left:
            break
        await asyncio.sleep(0.1)
    assert left == 0
    async with db.session() as s:
        folded = (
            await s.execute(
                text(
                    "SELECT count, tokens FROM usage_daily "
                    "WHERE tenant_id = :t AND metric = 'ledger:recharge'"
                ),
                {"t": customer.tenant_id},
            )
        ).one()
    assert tuple(folded) == (1, 11)
