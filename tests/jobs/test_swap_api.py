"""POST /api/v1/swap-face end to end: real engine, real holds, an in-process worker.

Every test makes its own customer (tenant, user, key, Tokens) and checks what that customer
would see: the answer, the balance, the ledger, and the job.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import cv2
import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import text

from app.core.idempotency import repository as idempotency
from app.webhooks.signing import SIGNATURE_HEADER, verify
from tests.admin.helpers import root_headers
from tests.jobs.conftest import (
    Customer,
    LocalServer,
    assert_delivered,
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
BIDEN = face("biden.jpg")
MAX_BODY = 4 * 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def swap_body(**overrides: Any) -> dict[str, Any]:
    return {"source": b64(OBAMA), "target": b64(BIDEN), **overrides}


@pytest.fixture(scope="module")
async def swap_app(settings, tmp_path_factory, local_server: LocalServer) -> AsyncIterator[FastAPI]:
    configured = job_settings(
        settings,
        tmp_path_factory.mktemp("swap-api"),
        url_fetch_allow_hosts=local_server.allow,
        jobs_max_body_bytes=MAX_BODY,
    )
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(swap_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(swap_app) as client:
        yield client


async def post_swap(
    api: httpx.AsyncClient, customer: Customer, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await api.post("/api/v1/swap-face", json=body, headers={**customer.headers, **headers})


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


# -- the happy path and the ledger -------------------------------------------------------------


async def test_image_swap_with_a_real_face_charges_one_token_and_the_ledger_shows_hold_and_capture(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["message"] == "Face swap completed"
    assert body["tokens_charged"] == 1
    result = body["result"]
    assert result["resolution"] == "970x2204" and result["faces_swapped"] == 1
    swapped = decode(base64.b64decode(result["image"]))
    original = decode(BIDEN)
    assert swapped.shape == original.shape
    assert float(np.abs(swapped.astype(int) - original.astype(int)).mean()) > 0.5

    assert await balance(api, customer) == {"balance": 9, "held": 0, "available": 9}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("capture", -1)]
    job = (await api.get(f"/api/v1/jobs/{body['job_id']}", headers=customer.headers)).json()
    assert (job["status"], job["kind"], job["tokens_held"], job["tokens_charged"]) == (
        "succeeded",
        "image",
        1,
        1,
    )
    assert job["progress"] == 1 and job["error"] is None and job["price_version"] == 0
    assert job["result"]["resolution"] == "970x2204"
    download = await api.get(f"/api/v1/jobs/{body['job_id']}/result", headers=customer.headers)
    assert download.status_code == 200 and download.headers["content-type"] == "image/jpeg"
    assert download.content == base64.b64decode(result["image"])
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_a_price_change_counts_from_the_next_swap_after_the_old_price_was_used(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=20)
    first = await post_swap(api, customer, swap_body(response="url"))
    assert first.status_code == 200 and first.json()["tokens_charged"] == 1
    changed = await api.put(
        f"/api/v1/admin/tenants/{customer.tenant_id}/pricing",
        json={"image": 3, "reason": "new model"},
        headers=await root_headers(api),
    )
    assert changed.status_code == 200 and changed.json()["version"] == 1

    plain = await post_swap(api, customer, swap_body(response="url"))
    keyed = await post_swap(api, customer, swap_body(response="url"), **{"Idempotency-Key": "p1"})
    for response in (plain, keyed):
        assert response.status_code == 200, response.text
        assert response.json()["tokens_charged"] == 3
        job_id = response.json()["job_id"]
        job = (await api.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
        assert (job["price_version"], job["tokens_held"]) == (1, 3)
    assert await balance(api, customer) == {"balance": 13, "held": 0, "available": 13}
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_a_target_without_a_face_fails_with_no_face_detected_and_the_balance_is_unchanged(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body(target=b64(gradient_png())))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "NoFaceDetected"
    assert error["details"]["tokens_charged"] == 0
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("release", 1)]
    job = (
        await api.get(f"/api/v1/jobs/{error['details']['job_id']}", headers=customer.headers)
    ).json()
    assert job["status"] == "failed" and job["error"]["code"] == "NoFaceDetected"
    assert job["tokens_charged"] == 0 and job["result"] is None
    result = await api.get(f"/api/v1/jobs/{job['id']}/result", headers=customer.headers)
    assert result.status_code == 409  # the job exists: it failed, so there is no file
    assert result.json()["error"]["code"] == "JobFailed"
    assert result.json()["error"]["details"]["error_code"] == "NoFaceDetected"


def gif(*images: bytes, **save: Any) -> bytes:
    """An animation of these images, one frame each, at the first one's size."""
    frames = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    frames = [frame.resize(frames[0].size) for frame in frames]
    out = io.BytesIO()
    frames[0].save(out, format=save.pop("format", "GIF"), save_all=True,
                   append_images=frames[1:], duration=100, loop=0, **save)  # fmt: skip
    return out.getvalue()


async def test_an_animated_target_is_refused_rather_than_swapped_as_a_still(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    for animated in (gif(BIDEN, OBAMA), gif(BIDEN, OBAMA, format="WEBP")):
        response = await post_swap(api, customer, swap_body(target=b64(animated)))
        assert response.status_code == 415, response.text
        error = response.json()["error"]
        assert error["code"] == "UnsupportedMediaType" and "video" in error["message"]
    assert await ledger_kinds(api, customer) == [("recharge", 10)]
    # A still GIF target is swapped, and an animated source lends its first frame's face;
    # a camera's MPO photo (a JPEG with a second, preview picture) is no animation.
    for source, target in (
        (gif(OBAMA, BIDEN), gif(BIDEN)),
        (OBAMA, gif(BIDEN, OBAMA, format="MPO")),
    ):
        response = await post_swap(api, customer, swap_body(source=b64(source), target=b64(target)))
        assert response.status_code == 200, response.text
        assert response.json()["tokens_charged"] == 1


async def test_undecodable_and_foreign_files_are_refused_before_anything_is_held(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    broken_jpeg = b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50
    response = await post_swap(api, customer, swap_body(target=b64(broken_jpeg)))
    assert response.status_code == 400 and response.json()["error"]["code"] == "ImageDecodeFailed"
    response = await post_swap(api, customer, swap_body(source=b64(b"just some text" * 10)))
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "UnsupportedMediaType"
    response = await post_swap(api, customer, swap_body(target=b64(b"%PDF-1.7 " * 40)))
    assert response.status_code == 415  # and it says what would do
    assert (
        "JPEG" in response.json()["error"]["message"]
        and "MP4" in response.json()["error"]["message"]
    )
    response = await post_swap(api, customer, swap_body(target="***not base64***"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidBase64"
    response = await post_swap(api, customer, {"source": b64(OBAMA)})
    assert response.status_code == 422 and response.json()["error"]["code"] == "ValidationError"
    response = await post_swap(api, customer, swap_body(output_format="mp4"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidOutputFormat"
    assert await ledger_kinds(api, customer) == [("recharge", 10)]
    jobs = (await api.get("/api/v1/jobs", headers=customer.headers)).json()
    assert jobs["items"] == []


async def test_an_image_cut_short_is_refused_before_anything_is_held(api, db) -> None:
    """The first 4 KB of a photo (its headers whole, its pixels missing) is 400
    ImageDecodeFailed with no job, no hold and no release: nothing in the ledger."""
    customer = await make_customer(api, db, tokens=10)
    photo = Image.open(io.BytesIO(BIDEN)).convert("RGB")
    for fmt in ("JPEG", "PNG", "WEBP"):
        whole = io.BytesIO()
        photo.save(whole, format=fmt)
        for role in ("target", "source"):
            body = swap_body(**{role: b64(whole.getvalue()[:4096])})
            response = await post_swap(api, customer, body)
            assert response.status_code == 400, (fmt, role, response.text)
            assert response.json()["error"]["code"] == "ImageDecodeFailed", (fmt, role)
    assert await ledger_kinds(api, customer) == [("recharge", 10)]
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    async with db.session() as session:
        holds = await session.scalar(
            text("SELECT count(*) FROM holds WHERE tenant_id = :t"), {"t": customer.tenant_id}
        )
    assert holds == 0
    jobs = (await api.get("/api/v1/jobs", headers=customer.headers)).json()
    assert jobs["items"] == []


async def test_more_than_six_face_pairs_is_a_400_and_nothing_is_held(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    pairs = [{"target_face": i, "source_face": 0} for i in range(7)]
    response = await post_swap(api, customer, swap_body(faces=pairs))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidFaceMapping"
    response = await post_swap(
        api, customer, swap_body(faces=[{"target_face": 0}, {"target_face": 0}])
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidFaceMapping"
    # Every other malformed mapping gets the same clear answer, not a guess at its shape.
    for faces in ("biggest", 7, [{"target_face": -1}], [{"target_face": 10**30}],
                  [{"target_face": 0.5}], [{"target_face": True}], [{"face": 0}]):  # fmt: skip
        response = await post_swap(api, customer, swap_body(faces=faces))
        assert response.status_code == 400, (faces, response.text)
        error = response.json()["error"]
        assert error["code"] == "InvalidFaceMapping" and "target_face" in error["message"]
    assert await ledger_kinds(api, customer) == [("recharge", 10)]


async def test_inputs_that_cannot_be_stored_leave_no_job_no_hold_and_no_files(
    api, db, swap_app, monkeypatch
) -> None:
    """The disk fills up while the target is written: the job and its hold are rolled
    back together, the source already written is removed, and the customer is told it
    is our fault (500), with nothing charged."""
    store = swap_app.state.result_store
    real_put = store.put
    written: list[str] = []

    async def put(key: str, data: Any, content_type: str, **kw: Any) -> Any:
        if key.endswith("-target.jpg"):
            raise OSError(28, "No space left on device")
        written.append(key)
        return await real_put(key, data, content_type, **kw)

    monkeypatch.setattr(store, "put", put)
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "InternalError"
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10)]
    jobs = (await api.get("/api/v1/jobs", headers=customer.headers)).json()
    assert jobs["items"] == []
    assert written  # the source was stored before the target failed
    for key in written:
        assert not (store.root / key).exists()


async def test_a_result_that_cannot_be_stored_fails_the_job_and_charges_nothing(
    api, db, swap_app, monkeypatch
) -> None:
    """The swap worked but its result could not be written: the job fails as our fault
    (InternalError), the hold is released, and no result is left behind."""
    store = swap_app.state.result_store
    real_put = store.put

    async def put(key: str, data: Any, content_type: str, **kw: Any) -> Any:
        if key.startswith("results/"):
            raise OSError(28, "No space left on device")
        return await real_put(key, data, content_type, **kw)

    monkeypatch.setattr(store, "put", put)
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["code"] == "InternalError" and error["details"]["tokens_charged"] == 0
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10), ("hold", -1), ("release", 1)]
    job = (
        await api.get(f"/api/v1/jobs/{error['details']['job_id']}", headers=customer.headers)
    ).json()
    assert job["status"] == "failed" and job["result"] is None


async def test_a_job_says_succeeded_only_once_its_result_is_stored(
    api, db, swap_app, monkeypatch
) -> None:
    """The result is written while the job's outcome is recorded, but until the file is
    on disk the job stays processing and its Token stays held: nobody is ever told a job
    succeeded whose result is missing."""
    store = swap_app.state.result_store
    real_put = store.put
    writing, may_write = asyncio.Event(), asyncio.Event()

    async def put(key: str, data: Any, content_type: str, **kw: Any) -> Any:
        if key.startswith("results/"):
            writing.set()
            await may_write.wait()
        return await real_put(key, data, content_type, **kw)

    monkeypatch.setattr(store, "put", put)
    customer = await make_customer(api, db, tokens=10)
    answer = asyncio.ensure_future(post_swap(api, customer, swap_body()))
    await asyncio.wait_for(writing.wait(), 60)
    await asyncio.sleep(0.3)  # ample time for the finish statement to run meanwhile
    jobs = (await api.get("/api/v1/jobs", headers=customer.headers)).json()["items"]
    assert [job["status"] for job in jobs] == ["processing"]
    assert await balance(api, customer) == {"balance": 10, "held": 1, "available": 9}
    may_write.set()
    response = await answer
    assert response.status_code == 200, response.text
    await assert_delivered(api, customer, jobs[0]["id"])


async def test_a_result_past_its_retention_is_410_result_expired_also_on_replay(
    api, db, swap_app
) -> None:
    """Once the cleanup removed a result, asking for it (directly, by its link, or by
    replaying the swap with its Idempotency-Key, base64 or url) says it expired, not that
    the job is unknown, and no link that cannot work is handed out."""
    customer = await make_customer(api, db, tokens=10)
    first = await post_swap(api, customer, swap_body(), **{"Idempotency-Key": "kept-1"})
    assert first.status_code == 200, first.text
    linked = await post_swap(
        api, customer, swap_body(response="url"), **{"Idempotency-Key": "kept-2"}
    )
    assert linked.status_code == 200, linked.text
    job_id = first.json()["job_id"]
    job = (await api.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
    store = swap_app.state.result_store
    for done in (job_id, linked.json()["job_id"]):  # as the cleanup would
        for path in store.root.rglob(f"{done.replace('-', '')}*"):
            path.unlink()

    direct = await api.get(f"/api/v1/jobs/{job_id}/result", headers=customer.headers)
    by_link = await api.get(job["result"]["url"])
    replay = await post_swap(api, customer, swap_body(), **{"Idempotency-Key": "kept-1"})
    link_replay = await post_swap(
        api, customer, swap_body(response="url"), **{"Idempotency-Key": "kept-2"}
    )
    for response in (direct, by_link, replay, link_replay):
        assert response.status_code == 410, response.text
        assert response.json()["error"]["code"] == "ResultExpired"
    assert replay.json()["error"]["details"]["job_id"] == job_id
    assert job["status"] == "succeeded"
    again = (await api.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
    assert again["result"]["url"] is None and again["result"]["resolution"]
    assert await balance(api, customer) == {"balance": 8, "held": 0, "available": 8}


async def test_an_oversize_body_is_413_payload_too_large(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    response = await api.post(
        "/api/v1/swap-face",
        content=b"{" + b" " * (MAX_BODY + 10) + b"}",
        headers={**customer.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PayloadTooLarge"


# -- idempotency ---------------------------------------------------------------------------------


async def test_replaying_a_swap_with_the_same_idempotency_key_returns_the_same_job_and_charges_once(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    first = await post_swap(api, customer, swap_body(), **{"Idempotency-Key": "swap-1"})
    assert first.status_code == 200, first.text
    again = await post_swap(api, customer, swap_body(), **{"Idempotency-Key": "swap-1"})
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()

    # Two at once with a fresh key: one job, one charge.
    both = await asyncio.gather(
        *(post_swap(api, customer, swap_body(), **{"Idempotency-Key": "swap-2"}) for _ in range(2))
    )
    assert [r.status_code for r in both] == [200, 200]
    assert both[0].json()["job_id"] == both[1].json()["job_id"]
    assert await balance(api, customer) == {"balance": 8, "held": 0, "available": 8}

    other = await post_swap(
        api, customer, swap_body(target=b64(OBAMA)), **{"Idempotency-Key": "swap-1"}
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IdempotencyKeyReused"
    jobs = (await api.get("/api/v1/jobs", headers=customer.headers)).json()["items"]
    assert len(jobs) == 2


async def test_a_multipart_replay_with_a_new_boundary_is_recognised_as_the_same_request(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    files = {"source": ("a.jpg", OBAMA, "image/jpeg"), "target": ("b.jpg", BIDEN, "image/jpeg")}
    headers = {**customer.headers, "Idempotency-Key": "multi-1"}
    first = await api.post(
        "/api/v1/swap-face", files=files, data={"response": "url"}, headers=headers
    )
    second = await api.post(
        "/api/v1/swap-face", files=files, data={"response": "url"}, headers=headers
    )
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["job_id"] == second.json()["job_id"]
    assert (await balance(api, customer))["balance"] == 9


# -- refusals: frozen, revoked, SSRF, rate limit ------------------------------------------------


async def test_a_frozen_account_gets_403_account_frozen_and_nothing_is_held(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    frozen = await api.post(
        f"/api/v1/admin/tenants/{customer.tenant_id}/users/{customer.external_id}/freeze",
        json={"reason": "chargeback"},
        headers=await root_headers(api),
    )
    assert frozen.status_code == 200
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AccountFrozen"
    assert await balance(api, customer) == {"balance": 10, "held": 0, "available": 10}
    assert await ledger_kinds(api, customer) == [("recharge", 10)]


async def test_a_revoked_key_gets_401_at_once(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    assert (await post_swap(api, customer, swap_body())).status_code == 200
    revoked = await api.delete(
        f"/api/v1/admin/tenants/{customer.tenant_id}/api-keys/{customer.key_id}",
        headers=await root_headers(api),
    )
    assert revoked.status_code == 204
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidApiKey"


async def test_insufficient_balance_is_402_and_nothing_is_held(api, db) -> None:
    customer = await make_customer(api, db, tokens=0)
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "InsufficientBalance"
    assert await balance(api, customer) == {"balance": 0, "held": 0, "available": 0}


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1/face.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "redirect:/to-loopback",
        "redirect:/to-metadata",
    ],
)
async def test_ssrf_attempts_are_refused_with_url_not_allowed_and_nothing_is_held(
    api, db, local_server: LocalServer, target: str
) -> None:
    local_server.redirects["/to-loopback"] = "http://127.0.0.1:1/face.jpg"
    local_server.redirects["/to-metadata"] = "http://169.254.169.254/latest/meta-data/"
    if target.startswith("redirect:"):
        target = local_server.url(target.removeprefix("redirect:"))
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body(target={"url": target}))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "UrlNotAllowed"
    assert await ledger_kinds(api, customer) == [("recharge", 10)]


async def test_a_private_webhook_url_is_refused_before_anything_is_held(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body(webhook_url="http://10.0.0.7/hooks"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "UrlNotAllowed"
    assert await ledger_kinds(api, customer) == [("recharge", 10)]


async def test_past_the_key_rate_swap_face_answers_429_with_retry_after(api, db) -> None:
    customer = await make_customer(api, db, tokens=10, rate_limit_per_second=1)
    statuses = []
    for _ in range(3):
        response = await post_swap(api, customer, {})  # refused at validation, after the limit
        statuses.append(response.status_code)
    assert statuses[:2] == [422, 422] and statuses[2] == 429
    assert response.json()["error"]["code"] == "RateLimited"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Remaining"] == "0"


async def test_result_downloads_take_byte_ranges_and_ignore_ranges_that_are_not_valid(
    api, db
) -> None:
    """A player asks for byte ranges (206); a Range header that is not a valid byte range
    is ignored, as HTTP says (200, the whole file); one past the end is 416 in the error
    shape every other error has."""
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body(response="url"))
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    whole = (await api.get(f"/api/v1/jobs/{job_id}/result", headers=customer.headers)).content
    for url, headers in (
        (f"/api/v1/jobs/{job_id}/result", customer.headers),
        (response.json()["result"]["image_url"], {}),
    ):
        part = await api.get(url, headers={**headers, "Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == whole[:10]
        for ignored in ("bytes=abc", "bytes=5-2", "items=0-5", "bytes=-", "bytes=" + "9" * 40):
            full = await api.get(url, headers={**headers, "Range": ignored})
            assert full.status_code == 200 and full.content == whole, ignored
        past = await api.get(url, headers={**headers, "Range": f"bytes={len(whole)}-"})
        assert past.status_code == 416
        assert past.json()["error"]["code"] == "RangeNotSatisfiable"
        assert past.headers["Content-Range"] == f"bytes */{len(whole)}"


# -- inputs: multipart, URLs ---------------------------------------------------------------------


async def test_multipart_upload_works_and_the_signed_result_url_serves_the_file(
    api, db, swap_app
) -> None:
    customer = await make_customer(api, db, tokens=10)
    response = await api.post(
        "/api/v1/swap-face",
        files={
            "source": ("obama.jpg", OBAMA, "image/jpeg"),
            "target": ("biden.jpg", BIDEN, "image/jpeg"),
        },
        data={"response": "url", "faces": "largest", "output_format": "png"},
        headers=customer.headers,
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert "image" not in result and result["image_url"].startswith("/api/v1/results/")
    served = await api.get(result["image_url"])  # no API key: the signature is the permission
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert decode(served.content).shape == decode(BIDEN).shape
    tampered = await api.get(result["image_url"].replace("sig=", "sig=0"))
    assert tampered.status_code == 403
    # The path names the result once (not /api/v1/results/results/...); a link in the
    # old form (the whole key in its path), made before that change, still serves.
    assert not result["image_url"].startswith("/api/v1/results/results/")
    key = "results/" + result["image_url"].split("?")[0].removeprefix("/api/v1/results/")
    old_link = swap_app.state.result_store.signed_url(key, 60).replace(
        "/api/v1/results/", "/api/v1/results/results/"
    )
    assert (await api.get(old_link)).content == served.content
    forged = old_link.replace("/api/v1/results/results/", "/api/v1/results/inputs/")
    assert (await api.get(forged)).status_code == 403
    for url, headers in (
        (result["image_url"], {}),
        (f"/api/v1/jobs/{response.json()['job_id']}/result", customer.headers),
    ):  # HEAD, as link checkers and players probing the size send it
        head = await api.head(url, headers=headers)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(served.content)
    assert (await balance(api, customer))["balance"] == 9


async def test_multipart_takes_base64_text_fields_and_explains_a_file_sent_without_a_name(
    api, db
) -> None:
    customer = await make_customer(api, db, tokens=10)
    as_text = await api.post(
        "/api/v1/swap-face",
        data={"source": b64(OBAMA), "target": b64(BIDEN)},
        files={"unused": ("x.txt", b"", "text/plain")},  # makes httpx send multipart
        headers=customer.headers,
    )
    assert as_text.status_code == 200, as_text.text
    nameless = await api.post(
        "/api/v1/swap-face",
        files={"source": (None, OBAMA, "image/jpeg"), "target": ("b.jpg", BIDEN, "image/jpeg")},
        headers=customer.headers,
    )
    assert nameless.status_code == 400
    error = nameless.json()["error"]
    assert error["code"] == "InvalidBase64" and "file part with a filename" in error["message"]
    assert await balance(api, customer) == {"balance": 9, "held": 0, "available": 9}


async def test_a_replayed_url_swap_answers_with_a_link_signed_afresh(api, db) -> None:
    """Replayed a day later, the answer's link must still work: the one stored with the
    result when the job ended has expired by then."""
    customer = await make_customer(api, db, tokens=10)
    key = {"Idempotency-Key": "fresh-link"}
    first = await post_swap(api, customer, swap_body(response="url"), **key)
    assert first.status_code == 200, first.text
    stale = re.sub(r"expires=\d+", "expires=1", first.json()["result"]["image_url"])
    async with db.session() as s:
        await s.execute(
            text(
                "UPDATE jobs SET result = jsonb_set(result, '{url}', to_jsonb(CAST(:u AS text))) "
                "WHERE id = :id"
            ),
            {"u": stale, "id": first.json()["job_id"]},
        )
    again = await post_swap(api, customer, swap_body(response="url"), **key)
    assert again.headers["idempotent-replayed"] == "true"
    served = await api.get(again.json()["result"]["image_url"])
    assert served.status_code == 200 and decode(served.content).shape == decode(BIDEN).shape
    assert (await balance(api, customer))["balance"] == 9


async def test_url_inputs_from_an_allow_listed_local_server_work(
    api, db, local_server: LocalServer
) -> None:
    local_server.files["/obama.jpg"] = OBAMA
    local_server.files["/biden.jpg"] = BIDEN
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(
        api,
        customer,
        {
            "source": {"url": local_server.url("/obama.jpg")},
            "target": {"url": local_server.url("/biden.jpg")},
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["tokens_charged"] == 1
    missing = await post_swap(
        api, customer, swap_body(target={"url": local_server.url("/nothing.jpg")})
    )
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "UrlFetchFailed"
    assert (await balance(api, customer))["balance"] == 9


def future(iso: str) -> bool:
    """An expires_at at least 23 hours ahead (the default link TTL is 24 h)."""
    from datetime import UTC, datetime, timedelta

    return datetime.fromisoformat(iso) > datetime.now(UTC) + timedelta(hours=23)


async def test_a_result_link_read_later_is_signed_afresh(api, db) -> None:
    """The link stored when the job ended has expired; reading the job again hands out a
    link that is good for the full TTL from now and serves the same file."""
    from sqlalchemy import text

    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body(response="url"))
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    first = await api.get(response.json()["result"]["image_url"])
    assert first.status_code == 200
    async with db.session() as session:  # as if it had finished two days ago
        await session.execute(
            text(
                "UPDATE jobs SET result = result || jsonb_build_object('url', "
                "'/api/v1/results/x?expires=1&sig=0', 'expires_at', '2020-01-01T00:00:00Z') "
                "WHERE id = :id"
            ),
            {"id": job_id},
        )
    job = (await api.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
    assert future(job["result"]["expires_at"])
    served = await api.get(job["result"]["url"])
    assert served.status_code == 200 and served.content == first.content
    listed = (await api.get("/api/v1/jobs", headers=customer.headers)).json()["items"]
    assert [future(j["result"]["expires_at"]) for j in listed if j["id"] == job_id] == [True]


# -- webhooks ------------------------------------------------------------------------------------


async def test_a_finished_job_is_posted_to_its_webhook_signed_with_the_tenant_secret(
    api, db, local_server: LocalServer
) -> None:
    customer = await make_customer(api, db, tokens=10)
    hook = local_server.url(f"/hooks/{customer.external_id}")
    response = await post_swap(api, customer, swap_body(webhook_url=hook))
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]

    _, headers, body = (await local_server.posted(f"/hooks/{customer.external_id}"))[0]
    secret = await api.get(
        f"/api/v1/admin/tenants/{customer.tenant_id}/webhook-secret",
        headers=await root_headers(api),
    )
    assert secret.status_code == 200
    async with db.session() as s:
        reads = (
            await s.execute(
                text(
                    "SELECT count(*) FROM audit_log WHERE action = 'webhook_secret.read' "
                    "AND tenant_id = :t"
                ),
                {"t": customer.tenant_id},
            )
        ).scalar_one()
    assert reads == 1  # who has seen the key that can forge this tenant's webhooks
    signature = next(v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower())
    assert verify(secret.json()["secret"], signature, body)
    assert not verify("some other secret", signature, body)
    payload = orjson.loads(body)
    assert payload["id"] == job_id and payload["status"] == "succeeded"
    assert payload["tokens_charged"] == 1

    for _ in range(50):
        deliveries = (
            await api.get(f"/api/v1/jobs/{job_id}/webhook-deliveries", headers=customer.headers)
        ).json()
        if deliveries and deliveries[0]["status"] != "pending":
            break
        await asyncio.sleep(0.1)
    assert deliveries[0]["status"] == "delivered" and deliveries[0]["attempts"] == 1
    assert deliveries[0]["last_status_code"] == 200


async def test_a_webhook_whose_sender_died_is_sent_by_another_workers_sweep(
    api, db, local_server: LocalServer
) -> None:
    """The finishing transaction queued the delivery, then its worker died before sending
    it (here: a pending row whose lease ran out). Housekeeping sends it, once."""
    import uuid

    from app.jobs import repository as repo
    from app.webhooks import repository as webhooks

    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 200, response.text
    job_id = uuid.UUID(response.json()["job_id"])
    path = f"/hooks/orphan-{job_id.hex}"
    async with db.session() as session:
        job = await repo.get_job(session, job_id)
        assert job is not None
        delivery_id = await webhooks.insert_delivery(
            session, job.id, job.tenant_id, local_server.url(path), -1.0
        )

    received = await local_server.posted(path)  # housekeeping runs every 0.5 s here
    assert len(received) == 1
    assert orjson.loads(received[0][2])["id"] == str(job_id)
    for _ in range(50):
        async with db.session() as session:
            row = await webhooks.get_delivery(session, delivery_id)
        if row.status != "pending":
            break
        await asyncio.sleep(0.1)
    assert row.status == "delivered" and row.attempts == 1
    await asyncio.sleep(1.0)  # later sweeps leave a delivered webhook alone
    assert len([r for r in local_server.received if r[0] == path]) == 1


# -- jobs: ownership and listing -----------------------------------------------------------------


async def test_another_users_job_is_404_and_jobs_list_pages_by_cursor(api, db) -> None:
    owner = await make_customer(api, db, tokens=10)
    stranger = await make_customer(api, db, tokens=10)
    ids = []
    for _ in range(3):
        response = await post_swap(api, owner, swap_body(response="url"))
        assert response.status_code == 200
        ids.append(response.json()["job_id"])
    for path in ("", "/result", "/cancel"):
        method = api.post if path == "/cancel" else api.get
        other = await method(f"/api/v1/jobs/{ids[0]}{path}", headers=stranger.headers)
        assert other.status_code == 404, path
    page = (await api.get("/api/v1/jobs", params={"limit": 2}, headers=owner.headers)).json()
    assert [j["id"] for j in page["items"]] == ids[:0:-1]
    rest = (
        await api.get(
            "/api/v1/jobs",
            params={"limit": 2, "cursor": page["next_cursor"]},
            headers=owner.headers,
        )
    ).json()
    assert [j["id"] for j in rest["items"]] == ids[:1] and rest["next_cursor"] is None
    failed = (
        await api.get("/api/v1/jobs", params={"status": "failed"}, headers=owner.headers)
    ).json()
    assert failed["items"] == []
    forged = [
        f"0001-01-01T00:00:00+05:00|{ids[0]}",  # before year 1 once in UTC
        f"2026-01-01T00:00:00|{ids[0]}",  # no time zone
        "2026-01-01T00:00:00+00:00|not-a-uuid",
    ]
    for cursor in ["nonsense", *(base64.urlsafe_b64encode(f.encode()).decode() for f in forged)]:
        bad = await api.get("/api/v1/jobs", params={"cursor": cursor}, headers=owner.headers)
        assert bad.status_code == 400, (cursor, bad.text)
        assert bad.json()["error"]["code"] == "InvalidCursor"


async def test_the_database_announces_each_finished_job_with_its_final_row(
    api, db, database_url
) -> None:
    """Waiting requests answer from the job-finished notification: it arrives once per job,
    only when the job is final, and carries the whole final job."""
    import asyncpg

    from app.jobs.repository import JOB_DONE_CHANNEL, JobRecord, parse_done_payload

    heard: list[str] = []
    listener = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    await listener.add_listener(JOB_DONE_CHANNEL, lambda *args: heard.append(args[-1]))
    try:
        customer = await make_customer(api, db, tokens=10)
        response = await post_swap(api, customer, swap_body())
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        await asyncio.sleep(0.2)
    finally:
        await listener.close()
    mine = [p for p in heard if parse_done_payload(p)[0] == job_id]
    assert len(mine) == 1  # claimed (processing) was not announced; finished was, once
    job = JobRecord.from_json(parse_done_payload(mine[0])[1])
    assert str(job.id) == job_id and job.status == "succeeded"
    assert job.tokens_charged == 1 and job.finished_at is not None
    assert job.result is not None and job.result["faces_swapped"] == 1


async def test_verify_reports_a_job_whose_tokens_disagree_with_its_hold(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body())
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True
    edit = "UPDATE jobs SET tokens_charged = :charged WHERE id = :id"
    async with db.session() as s:
        await s.execute(text(edit), {"charged": 0, "id": job_id})
    try:
        report = await verify_ledger(api, customer.tenant_id)
        assert report["ok"] is False
        [finding] = report["mismatches"]
        assert (finding["check"], finding["stored"], finding["recomputed"]) == ("job_hold", 0, 1)
        assert job_id in finding["detail"] and "captured 1" in finding["detail"]
    finally:
        async with db.session() as s:
            await s.execute(text(edit), {"charged": 1, "id": job_id})
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_a_keyed_swap_is_answered_even_when_its_answer_cannot_be_recorded(
    api, db, monkeypatch
) -> None:
    async def unreachable(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionRefusedError("the database went away after the job ended")

    monkeypatch.setattr(idempotency, "mark_answered", unreachable)
    customer = await make_customer(api, db, tokens=10)
    response = await post_swap(api, customer, swap_body(), **{"Idempotency-Key": "k-1"})
    assert response.status_code == 200, response.text
    assert response.json()["tokens_charged"] == 1
