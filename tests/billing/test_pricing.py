"""Versioned per-tenant price books: defaults, changes as new versions, audit, access."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from billing import pricing
from billing.pricing import DEFAULT_PRICE_BOOK, billable_seconds, video_price
from tests.admin.helpers import (
    bearer,
    create_admin,
    create_api_key,
    create_tenant,
    import_users,
    root_headers,
)


async def _user_headers(client, tenant_id: str) -> dict[str, str]:
    await import_users(client, tenant_id, ["pricing-user"])
    key = await create_api_key(client, tenant_id, "pricing-user")
    return {"Authorization": f"Bearer {key['key']}"}


def test_video_seconds_are_billed_per_started_second() -> None:
    assert [billable_seconds(s) for s in (0.0, 0.2, 1.0, 2.0, 2.0000001, 2.01, 59.5)] == [
        0,
        1,
        1,
        2,
        2,
        3,
        60,
    ]
    assert video_price(10, 2.01) == 30
    assert DEFAULT_PRICE_BOOK.unit_price("image", enhance=True) == 2
    assert DEFAULT_PRICE_BOOK.unit_price("video", enhance=True) == 15


async def test_a_tenant_without_a_book_gets_the_default_version_0(client) -> None:
    tenant = await create_tenant(client)
    prices = (
        await client.get("/api/v1/pricing", headers=await _user_headers(client, tenant["id"]))
    ).json()
    assert prices["version"] == 0 and prices["effective_from"] is None
    assert (prices["image"], prices["video_second"]) == (1, 10)
    assert (prices["enhance_surcharge"], prices["enhance_video_second_surcharge"]) == (1, 5)


async def test_each_price_change_is_a_new_audited_version_and_the_old_ones_stay(client) -> None:
    tenant = await create_tenant(client)
    admin = await create_admin(client, tenant["id"])
    url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    first = await client.put(
        url, json={"image": 2, "reason": "new year"}, headers=bearer(admin["token"])
    )
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["image"], first.json()["video_second"]) == (
        1,
        2,
        10,
    )
    second = await client.put(url, json={"video_second": 8}, headers=bearer(admin["token"]))
    assert (second.json()["version"], second.json()["image"], second.json()["video_second"]) == (
        2,
        2,
        8,
    )
    book = (await client.get(url, headers=bearer(admin["token"]))).json()
    assert book["current"]["version"] == 2
    assert [v["version"] for v in book["history"]] == [2, 1]
    mine = (
        await client.get("/api/v1/pricing", headers=await _user_headers(client, tenant["id"]))
    ).json()
    assert (mine["version"], mine["image"], mine["video_second"]) == (2, 2, 8)

    log = (
        await client.get(
            "/api/v1/admin/audit-log",
            params={"tenant_id": tenant["id"], "action": "price.update"},
            headers=await root_headers(client),
        )
    ).json()["items"]
    assert len(log) == 2
    newest = log[0]["details"]
    assert newest["version"] == 2 and newest["previous"]["video_second"] == 10
    assert newest["prices"]["video_second"] == 8 and log[0]["actor"] == admin["email"]


async def _price_updates(client, tenant_id: str) -> list[dict]:
    log = await client.get(
        "/api/v1/admin/audit-log",
        params={"tenant_id": tenant_id, "action": "price.update"},
        headers=await root_headers(client),
    )
    return log.json()["items"]


async def test_prices_are_json_integers_and_a_unit_costs_at_least_one_token(client) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    headers = await root_headers(client)
    for body in (
        {"image": 0},
        {"video_second": -1},
        {"enhance_surcharge": -2},
        {"image": pricing.MAX_PRICE + 1},
        {"image": 1.5},
        {"image": 3.0},
        {"image": "3"},
        {"image": True},
        {"video_second": None},
        {"image": 2, "enhance_surcharge": "1"},  # one bad price refuses the whole change
    ):
        response = await client.put(url, json=body, headers=headers)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == "InvalidAmount", body
    assert (await client.get(url, headers=headers)).json()["history"] == []
    assert await _price_updates(client, tenant["id"]) == []


async def test_a_price_change_with_an_unknown_field_is_refused_whole(client) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    headers = await root_headers(client)
    for body in ({"foo": 3}, {"image": 2, "imag": 3}, {"images": 2}):
        response = await client.put(url, json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "ValidationError", body
    assert (await client.get(url, headers=headers)).json()["history"] == []
    assert await _price_updates(client, tenant["id"]) == []


async def test_a_price_change_that_changes_nothing_writes_no_version_and_no_audit(client) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    headers = await root_headers(client)
    # Against the default book (version 0), then against a version of the tenant's own.
    for body in ({}, {"reason": "nothing"}, {"image": 1, "video_second": 10}):
        same = await client.put(url, json=body, headers=headers)
        assert same.status_code == 200, (body, same.text)
        assert (same.json()["version"], same.json()["image"]) == (0, 1), body
    changed = await client.put(url, json={"image": 4}, headers=headers)
    assert changed.json()["version"] == 1
    for body in ({}, {"image": 4}, {"image": 4, "enhance_surcharge": 1, "reason": "again"}):
        same = await client.put(url, json=body, headers=headers)
        assert same.status_code == 200, (body, same.text)
        assert same.json() == changed.json(), body
    assert [v["version"] for v in (await client.get(url, headers=headers)).json()["history"]] == [1]
    assert len(await _price_updates(client, tenant["id"])) == 1


async def test_other_tenants_admins_get_404_and_auditors_may_not_change_prices(client) -> None:
    tenant = await create_tenant(client)
    other = await create_tenant(client)
    stranger = await create_admin(client, other["id"])
    auditor = await create_admin(client, tenant["id"], role="auditor")
    url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    assert (await client.get(url, headers=bearer(stranger["token"]))).status_code == 404
    refused = await client.put(url, json={"image": 5}, headers=bearer(stranger["token"]))
    assert refused.status_code == 404
    assert (await client.get(url, headers=bearer(auditor["token"]))).status_code == 200
    readonly = await client.put(url, json={"image": 5}, headers=bearer(auditor["token"]))
    assert readonly.status_code == 403


async def test_the_database_refuses_to_edit_a_price_book(client, db) -> None:
    tenant = await create_tenant(client)
    await client.put(
        f"/api/v1/admin/tenants/{tenant['id']}/pricing",
        json={"image": 3},
        headers=await root_headers(client),
    )
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.session() as s:
            await s.execute(
                text("UPDATE price_books SET image = 1 WHERE tenant_id = :t"), {"t": tenant["id"]}
            )


async def test_two_price_changes_at_once_both_count(client, db) -> None:
    """Admin A changes the image price; admin B, at the same moment, the video price. B
    waits for A's change and merges into it: neither change is lost, and B's audit of
    what it replaced shows A's version."""
    tenant_id = uuid.UUID((await create_tenant(client))["id"])
    async with db.session() as first:
        await pricing.set_prices(
            first, tenant_id, {"image": 7}, created_by=None, created_by_email="a", reason="a"
        )

        async def second_change() -> tuple[pricing.PriceBook, pricing.PriceBook]:
            async with db.session() as second:
                return await pricing.set_prices(
                    second, tenant_id, {"video_second": 33},
                    created_by=None, created_by_email="b", reason="b",
                )  # fmt: skip

        second = asyncio.create_task(second_change())
        await asyncio.sleep(0.3)  # B is waiting for A's lock; A commits on leaving
    replaced, written = await second
    assert (replaced.version, replaced.image) == (1, 7)
    assert (written.version, written.image, written.video_second) == (2, 7, 33)


# -- load pricing: the peak ----------------------------------------------------------------


async def test_a_peak_is_a_new_audited_version_shown_in_history_and_null_removes_it(
    client,
) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    headers = await root_headers(client)
    peak = {"queue_depth_at_least": 50, "multiplier": 1.5}
    first = await client.put(url, json={"peak": peak, "reason": "evening load"}, headers=headers)
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["peak"], first.json()["image"]) == (1, peak, 1)
    # The same peak again (1.50 is 1.5) writes nothing; other prices keep the peak.
    same = await client.put(url, json={"peak": {**peak, "multiplier": 1.50}}, headers=headers)
    assert same.json()["version"] == 1
    priced = await client.put(url, json={"image": 2}, headers=headers)
    assert (priced.json()["version"], priced.json()["peak"]) == (2, peak)
    removed = await client.put(url, json={"peak": None}, headers=headers)
    assert (removed.json()["version"], removed.json()["peak"]) == (3, None)

    book = (await client.get(url, headers=headers)).json()
    assert [(v["version"], v["peak"]) for v in book["history"]] == [
        (3, None),
        (2, peak),
        (1, peak),
    ]
    mine = await client.get("/api/v1/pricing", headers=await _user_headers(client, tenant["id"]))
    assert (mine.json()["version"], mine.json()["peak"]) == (3, None)
    log = await _price_updates(client, tenant["id"])
    assert [(e["details"]["peak"], e["details"]["previous_peak"]) for e in log] == [
        (None, peak),
        (peak, peak),
        (peak, None),
    ]


async def test_a_peak_out_of_range_or_of_the_wrong_shape_is_refused(client) -> None:
    tenant = await create_tenant(client)
    url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    headers = await root_headers(client)
    for peak in (
        {"queue_depth_at_least": 10, "multiplier": 1},  # not above 1
        {"queue_depth_at_least": 10, "multiplier": 0.5},
        {"queue_depth_at_least": 10, "multiplier": 10.01},  # over 10
        {"queue_depth_at_least": 10, "multiplier": 1.255},  # three decimal places
        {"queue_depth_at_least": 10, "multiplier": "2"},
        {"queue_depth_at_least": 10, "multiplier": True},
        {"queue_depth_at_least": 0, "multiplier": 2},
        {"queue_depth_at_least": 2.5, "multiplier": 2},
        {"queue_depth_at_least": "5", "multiplier": 2},
        {"queue_depth_at_least": 5},
        {"queue_depth_at_least": 5, "multiplier": 2, "extra": 1},
        [5, 2],
        2,
    ):
        response = await client.put(url, json={"peak": peak, "image": 3}, headers=headers)
        assert response.status_code == 422, (peak, response.text)
        assert response.json()["error"]["code"] == "ValidationError", peak
    assert (await client.get(url, headers=headers)).json()["history"] == []
    # Float noise is not a third decimal place: 115 * 0.01 is 1.15.
    noisy = await client.put(
        url, json={"peak": {"queue_depth_at_least": 1, "multiplier": 115 * 0.01}}, headers=headers
    )
    assert noisy.status_code == 200 and noisy.json()["peak"]["multiplier"] == 1.15


def test_a_peak_multiplies_the_price_and_rounds_up_to_a_whole_token() -> None:
    book = replace(DEFAULT_PRICE_BOOK, peak=pricing.Peak(5, Decimal("1.25")))
    assert [book.multiplier_at(d) for d in (0, 4, 5, 500)] == [
        1,
        1,
        Decimal("1.25"),
        Decimal("1.25"),
    ]
    assert DEFAULT_PRICE_BOOK.multiplier_at(10**9) == 1
    assert [pricing.at_multiplier(t, Decimal("1.25")) for t in (1, 4, 20, 30)] == [2, 5, 25, 38]
    assert pricing.at_multiplier(7, Decimal(1)) == 7
    assert pricing.at_multiplier(3, Decimal("10")) == 30
