"""Load pricing and quotes: a peak multiplier by queue depth, held and recorded; POST /quote.

The queue is made deep the way it gets deep in production: swaps accepted while no
worker runs (an API process without a worker of its own). The module's last test starts
a worker, which runs them all. The depth is global (every queued job of the test
database counts), so each test sets its tenant's threshold from the depth it finds.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.jobs import repository as repo
from app.jobs import settle
from app.jobs.queue import PROCESS_QUEUE_DEPTH
from tests.admin.helpers import root_headers
from tests.jobs.conftest import (
    Customer,
    balance,
    client_for,
    face,
    gradient_png,
    job_settings,
    ledger_kinds,
    make_customer,
    running_app,
    verify_ledger,
    wait_for_job,
)

OBAMA = face("obama.jpg")
BIDEN = face("biden.jpg")
SMALL = face("obama_small.jpg")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def swap_body(**overrides: Any) -> dict[str, Any]:
    return {"source": b64(OBAMA), "target": b64(BIDEN), **overrides}


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data and results directory for the API process and the worker started later."""
    return tmp_path_factory.mktemp("peak")


@pytest.fixture(scope="module")
async def front(settings, shared_dir: Path) -> AsyncIterator[FastAPI]:
    """An API process without a worker: what it accepts stays queued. Images answer 202
    at once (no wait for a worker that is not there)."""
    configured = job_settings(
        settings, shared_dir, jobs_inprocess_worker=False, jobs_image_wait_seconds=0.0
    )
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(front: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(front) as client:
        yield client


async def queued_now(db) -> int:
    async with db.session() as s:
        return int(
            (await s.execute(text("SELECT count(*) FROM jobs WHERE status = 'queued'"))).scalar()
        )


async def deepen_queue(api: httpx.AsyncClient, db, at_least: int) -> None:
    """Swaps accepted and left queued until at least ``at_least`` jobs wait."""
    missing = at_least - await queued_now(db)
    if missing <= 0:
        return
    filler = await make_customer(api, db, tokens=missing)
    for _ in range(missing):
        response = await api.post(
            "/api/v1/swap-face",
            json={"source": b64(SMALL), "target": b64(SMALL), "response": "url"},
            headers=filler.headers,
        )
        assert response.status_code == 202, response.text
    assert await queued_now(db) >= at_least
    PROCESS_QUEUE_DEPTH.forget()  # as if the second the count is kept for had passed


async def set_peak(
    api: httpx.AsyncClient, customer: Customer, peak: dict[str, Any] | None, **prices: int
) -> dict[str, Any]:
    response = await api.put(
        f"/api/v1/admin/tenants/{customer.tenant_id}/pricing",
        json={"peak": peak, **prices},
        headers=await root_headers(api),
    )
    assert response.status_code == 200, response.text
    PROCESS_QUEUE_DEPTH.forget()
    return response.json()


async def quote(api: httpx.AsyncClient, customer: Customer, body: dict[str, Any]) -> httpx.Response:
    return await api.post("/api/v1/quote", json=body, headers=customer.headers)


async def hold_of(db, job_id: str) -> tuple[int, Decimal, str]:
    async with db.session() as s:
        row = (
            await s.execute(
                text(
                    "SELECT h.amount, h.multiplier, h.status FROM holds h JOIN jobs j"
                    " ON j.tenant_id = h.tenant_id AND j.hold_reference = h.reference"
                    " WHERE j.id = :id"
                ),
                {"id": job_id},
            )
        ).one()
    return row.amount, row.multiplier, row.status


# -- under the threshold, quotes, bad input ---------------------------------------------------


async def test_under_the_peak_threshold_a_swap_holds_its_base_price_at_multiplier_1(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    book = await set_peak(
        api, customer, {"queue_depth_at_least": await queued_now(db) + 1000, "multiplier": 2}
    )
    assert book["peak"] == {"queue_depth_at_least": book["peak"]["queue_depth_at_least"],
                            "multiplier": 2.0}  # fmt: skip

    quoted = (await quote(api, customer, swap_body())).json()
    assert (quoted["tokens"], quoted["multiplier"], quoted["available"]) == (1, 1.0, 10)
    assert quoted["price_book_version"] == book["version"] == 1
    assert "video_seconds" not in quoted

    response = await api.post("/api/v1/swap-face", json=swap_body(), headers=customer.headers)
    assert response.status_code == 202, response.text
    assert (response.json()["tokens_held"], response.json()["multiplier"]) == (1, 1.0)
    job = (
        await api.get(f"/api/v1/jobs/{response.json()['job_id']}", headers=customer.headers)
    ).json()
    assert (job["tokens_held"], job["multiplier"], job["price_version"]) == (1, 1.0, 1)
    assert await hold_of(db, job["id"]) == (1, Decimal("1.00"), "held")


async def test_a_video_quote_gives_its_started_seconds_times_the_rate_times_the_multiplier(
    api, db, clip_2s: bytes
) -> None:
    customer = await make_customer(api, db, tokens=5)
    await deepen_queue(api, db, 1)
    await set_peak(api, customer, {"queue_depth_at_least": 1, "multiplier": 1.25})
    video = {"source": b64(OBAMA), "target": b64(clip_2s)}

    plain = (await quote(api, customer, video)).json()
    # 2 started seconds at 10 Tokens, times 1.25.
    assert (plain["kind"], plain["video_seconds"], plain["base_tokens"]) == ("video", 2, 20)
    assert (plain["tokens"], plain["multiplier"], plain["available"]) == (25, 1.25, 5)
    enhanced = (await quote(api, customer, {**video, "enhance": True})).json()
    # (10 + 5 enhance) per second, 2 seconds, times 1.25 = 37.5: rounded up to 38.
    assert (enhanced["unit_price"], enhanced["base_tokens"], enhanced["tokens"]) == (15, 30, 38)
    image = (await quote(api, customer, swap_body())).json()
    assert (image["base_tokens"], image["tokens"]) == (1, 2)  # 1.25 Tokens: rounded up to 2


async def test_a_quote_holds_queues_and_charges_nothing(api, db) -> None:
    customer = await make_customer(api, db, tokens=3)
    before = (await balance(api, customer), await ledger_kinds(api, customer))
    queued = await queued_now(db)
    for body in (swap_body(), {**swap_body(), "enhance": True}):
        response = await quote(api, customer, body)
        assert response.status_code == 200, response.text
    multipart = await api.post(
        "/api/v1/quote",
        files={"source": ("s.jpg", OBAMA, "image/jpeg"), "target": ("t.jpg", BIDEN, "image/jpeg")},
        data={"enhance": "true"},
        headers=customer.headers,
    )
    assert multipart.status_code == 200, multipart.text
    assert (multipart.json()["tokens"], multipart.json()["available"]) == (2, 3)
    assert (await balance(api, customer), await ledger_kinds(api, customer)) == before
    jobs = (await api.get("/api/v1/jobs", headers=customer.headers)).json()
    assert jobs["items"] == [] and await queued_now(db) == queued


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        ({"json": {"source": "%%%", "target": b64(BIDEN)}}, 400, "InvalidBase64"),
        ({"json": swap_body(output_format="mp4")}, 400, "InvalidOutputFormat"),
        ({"json": {"source": b64(OBAMA)}}, 422, "ValidationError"),
        ({"json": swap_body(faces=[{"target_face": 0}] * 7)}, 400, "InvalidFaceMapping"),
        ({"json": {"source": b64(OBAMA), "target": b64(b"not a picture")}}, 415, None),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, None),
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, None),
    ],
)
async def test_bad_input_gets_the_same_code_from_a_quote_as_from_the_swap(
    api, db, content: dict[str, Any], status: int, code: str | None
) -> None:
    customer = await make_customer(api, db, tokens=5)
    answers = []
    for path in ("/api/v1/quote", "/api/v1/swap-face"):
        headers = {**customer.headers, **content.get("headers", {})}
        sent = {k: v for k, v in content.items() if k != "headers"}
        answers.append(await api.post(path, headers=headers, **sent))
    quoted, swapped = answers
    assert quoted.status_code == swapped.status_code == status, quoted.text
    assert quoted.json()["error"]["code"] == swapped.json()["error"]["code"]
    if code is not None:
        assert quoted.json()["error"]["code"] == code
    assert await balance(api, customer) == {"balance": 5, "held": 0, "available": 5}


async def test_a_quote_needs_an_api_key_and_a_frozen_account_is_told_so(api, db) -> None:
    assert (await api.post("/api/v1/quote", json=swap_body())).status_code == 401
    customer = await make_customer(api, db, tokens=5)
    freeze = await api.post(
        f"/api/v1/admin/tenants/{customer.tenant_id}/users/{customer.external_id}/freeze",
        json={"reason": "test"},
        headers=await root_headers(api),
    )
    assert freeze.status_code == 200, freeze.text
    response = await quote(api, customer, swap_body())
    assert response.status_code == 403 and response.json()["error"]["code"] == "AccountFrozen"


async def test_quotes_have_a_rate_limit_of_their_own_that_leaves_swaps_alone(api, db) -> None:
    # 1 request/s for this key: a burst of 2 (the configured 20 per 10/s, scaled).
    customer = await make_customer(api, db, tokens=5, rate_limit_per_second=1)
    answers = [(await quote(api, customer, swap_body())).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    swap = await api.post("/api/v1/swap-face", json=swap_body(), headers=customer.headers)
    assert swap.status_code == 202, swap.text


async def test_a_video_stopped_part_way_is_charged_its_delivered_seconds_at_its_multiplier(
    api, db
) -> None:
    """What a partial video is charged (settle.charge_for) for a job held at 1.5."""
    customer = await make_customer(api, db, tokens=5)
    response = await api.post("/api/v1/swap-face", json=swap_body(), headers=customer.headers)
    async with db.session() as s:
        job = await repo.get_job(s, uuid.UUID(response.json()["job_id"]))
    assert job is not None
    video = replace(job, kind="video", unit_price=10, multiplier=Decimal("1.5"), tokens_held=45)
    # 1.2 s delivered: 2 started seconds, 20 Tokens, times 1.5.
    assert settle.charge_for(video, settle.Outcome("canceled", seconds_done=1.2)) == 30
    # Never more than the hold.
    assert settle.charge_for(video, settle.Outcome("canceled", seconds_done=2.9)) == 45
    assert settle.charge_for(video, settle.Outcome("succeeded", seconds_done=3.0)) == 45


# -- the acceptance: peak priced, held, recorded, settled -------------------------------------


async def test_a_peak_of_2_over_its_threshold_holds_2_per_image_as_quoted_and_settles_exactly(
    api, db, settings, shared_dir: Path
) -> None:
    customer = await make_customer(api, db, tokens=10)
    threshold = await queued_now(db) + 3
    book = await set_peak(api, customer, {"queue_depth_at_least": threshold, "multiplier": 2})
    await deepen_queue(api, db, threshold)

    quoted = await quote(api, customer, swap_body())
    assert quoted.status_code == 200, quoted.text
    assert quoted.json() == {
        "tokens": 2,
        "price_book_version": book["version"],
        "multiplier": 2.0,
        "available": 10,
        "kind": "image",
        "unit_price": 1,
        "base_tokens": 1,
    }
    swapped = await api.post("/api/v1/swap-face", json=swap_body(), headers=customer.headers)
    no_face = await api.post(
        "/api/v1/swap-face",
        json={"source": b64(OBAMA), "target": b64(gradient_png())},
        headers=customer.headers,
    )
    for response in (swapped, no_face):
        assert response.status_code == 202, response.text
        assert (response.json()["tokens_held"], response.json()["multiplier"]) == (2, 2.0)
        assert await hold_of(db, response.json()["job_id"]) == (2, Decimal("2.00"), "held")
    assert await balance(api, customer) == {"balance": 10, "held": 4, "available": 6}
    scraped = (await api.get("/metrics")).text
    assert f'swapmeter_tokens_held_at_peak_total{{tenant="{customer.tenant_id}"}} 4.0' in scraped
    assert f'swapmeter_price_multiplier{{tenant="{customer.tenant_id}"}} 2.0' in scraped

    # A worker starts: the queue drains, the jobs end.
    worker = job_settings(settings, shared_dir, jobs_worker_concurrency=2)
    async with running_app(worker):
        done = await wait_for_job(api, customer, swapped.json()["job_id"], timeout_s=180)
        failed = await wait_for_job(api, customer, no_face.json()["job_id"], timeout_s=180)
    assert (done["status"], done["tokens_held"], done["tokens_charged"]) == ("succeeded", 2, 2)
    assert (done["multiplier"], done["price_version"]) == (2.0, book["version"])
    assert (failed["status"], failed["error"]["code"]) == ("failed", "NoFaceDetected")
    assert (failed["tokens_held"], failed["tokens_charged"], failed["multiplier"]) == (2, 0, 2.0)
    assert await hold_of(db, done["id"]) == (2, Decimal("2.00"), "captured")
    assert await hold_of(db, failed["id"]) == (2, Decimal("2.00"), "released")
    assert await balance(api, customer) == {"balance": 8, "held": 0, "available": 8}
    kinds = await ledger_kinds(api, customer)
    assert kinds[0] == ("recharge", 10)
    assert sorted(kinds[1:]) == sorted(
        [("hold", -2), ("hold", -2), ("capture", -2), ("release", 2)]
    )
    report = await verify_ledger(api, customer.tenant_id)
    assert report["ok"] is True and report["mismatches"] == []
