"""Video swaps: 202 and polling, Prefer: wait, per-second pricing, cancel part-way.

Real engine and an in-process worker; clips are 320x180 pans over a still with a face.
"""

from __future__ import annotations

import asyncio
import base64
import math
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.admin.helpers import root_headers
from tests.jobs.conftest import (
    balance,
    client_for,
    face,
    job_settings,
    ledger_kinds,
    make_customer,
    running_app,
    verify_ledger,
    wait_for_job,
)

OBAMA = face("obama.jpg")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
async def video_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    configured = job_settings(settings, tmp_path_factory.mktemp("video-jobs"))
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(video_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(video_app) as client:
        yield client


def video_body(clip: bytes, **overrides: Any) -> dict[str, Any]:
    return {"source": b64(OBAMA), "target": b64(clip), **overrides}


async def test_a_video_answers_202_and_polling_shows_it_charged_ten_tokens_per_started_second(
    api, db, clip_2s: bytes
) -> None:
    customer = await make_customer(api, db, tokens=100)
    response = await api.post(
        "/api/v1/swap-face", json=video_body(clip_2s), headers=customer.headers
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and accepted["tokens_held"] == 20
    assert accepted["urls"]["get"] == f"/api/v1/jobs/{accepted['job_id']}"
    assert accepted["urls"]["cancel"] == f"/api/v1/jobs/{accepted['job_id']}/cancel"

    job = await wait_for_job(api, customer, accepted["job_id"])
    assert job["status"] == "succeeded", job
    assert (job["kind"], job["tokens_held"], job["tokens_charged"]) == ("video", 20, 20)
    assert job["target_seconds"] == pytest.approx(2.0, abs=0.05)
    assert job["result"]["resolution"] == "320x180" and job["result"]["frames"] == 60
    assert job["result"]["faces_swapped"] > 0
    download = await api.get(f"/api/v1/jobs/{job['id']}/result", headers=customer.headers)
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    assert download.content[4:8] == b"ftyp"
    assert await balance(api, customer) == {"balance": 80, "held": 0, "available": 80}
    assert await ledger_kinds(api, customer) == [
        ("recharge", 100),
        ("hold", -20),
        ("capture", -20),
    ]


async def test_prefer_wait_answers_200_like_an_image_when_the_video_finishes_in_time(
    api, db, clip_2s: bytes
) -> None:
    customer = await make_customer(api, db, tokens=100)
    response = await api.post(
        "/api/v1/swap-face",
        json=video_body(clip_2s, response="url"),
        headers={**customer.headers, "Prefer": "wait=60"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=60"
    body = response.json()
    assert body["status"] == "success" and body["tokens_charged"] == 20
    assert body["result"]["video_url"].startswith("/api/v1/results/")
    assert body["result"]["resolution"] == "320x180"
    served = await api.get(body["result"]["video_url"])
    assert served.status_code == 200 and served.headers["content-type"] == "video/mp4"


async def test_cancelling_a_long_video_part_way_charges_only_the_delivered_seconds(
    api, db, clip_long: bytes
) -> None:
    customer = await make_customer(api, db, tokens=500)
    response = await api.post(
        "/api/v1/swap-face", json=video_body(clip_long), headers=customer.headers
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.json()["tokens_held"] == 200

    await wait_for_job(api, customer, job_id, until=lambda j: j["progress"] >= 0.1)
    cancel = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["cancel_requested"] is True

    job = await wait_for_job(api, customer, job_id)
    assert job["status"] == "canceled" and job["error"]["code"] == "Canceled"
    delivered = job["seconds_done"]
    assert 2.0 <= delivered < 20.0, job
    charged = job["tokens_charged"]
    assert charged == 10 * math.ceil(round(delivered, 3)) and 0 < charged < 200
    assert job["progress"] == pytest.approx(delivered / 20.0, abs=1e-3)  # what was delivered
    assert job["result"] is None
    missing = await api.get(f"/api/v1/jobs/{job_id}/result", headers=customer.headers)
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "Canceled"
    assert await balance(api, customer) == {
        "balance": 500 - charged,
        "held": 0,
        "available": 500 - charged,
    }
    assert await ledger_kinds(api, customer) == [
        ("recharge", 500),
        ("hold", -200),
        ("capture", -charged),
        ("release", 200 - charged),
    ]
    again = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)
    assert again.status_code == 200 and again.json() == job
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_a_finished_job_cannot_be_canceled(api, db) -> None:
    customer = await make_customer(api, db, tokens=10)
    done = await api.post(
        "/api/v1/swap-face",
        json={"source": b64(OBAMA), "target": b64(face("biden.jpg")), "response": "url"},
        headers=customer.headers,
    )
    assert done.status_code == 200
    response = await api.post(
        f"/api/v1/jobs/{done.json()['job_id']}/cancel", headers=customer.headers
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "JobFinished"
    assert (await balance(api, customer))["balance"] == 9


async def test_a_tenant_price_change_prices_new_jobs_and_the_hold_records_its_version(
    api, db, clip_2s: bytes
) -> None:
    customer = await make_customer(api, db, tokens=100)
    changed = await api.put(
        f"/api/v1/admin/tenants/{customer.tenant_id}/pricing",
        json={"video_second": 3, "reason": "launch offer"},
        headers=await root_headers(api),
    )
    assert changed.status_code == 200 and changed.json()["version"] == 1
    prices = (await api.get("/api/v1/pricing", headers=customer.headers)).json()
    assert (prices["version"], prices["video_second"], prices["image"]) == (1, 3, 1)

    response = await api.post(
        "/api/v1/swap-face",
        json=video_body(clip_2s),
        headers={**customer.headers, "Prefer": "wait=60"},
    )
    assert response.status_code == 200 and response.json()["tokens_charged"] == 6
    job_id = response.json()["job_id"]
    async with db.session() as s:
        hold = (
            await s.execute(
                text("SELECT amount, captured, price_version FROM holds WHERE reference = :r"),
                {"r": f"job:{job_id}"},
            )
        ).one()
    assert tuple(hold) == (6, 6, 1)
    job = (await api.get(f"/api/v1/jobs/{job_id}", headers=customer.headers)).json()
    assert job["price_version"] == 1


async def test_a_video_target_with_an_image_output_format_is_refused_before_any_hold(
    api, db, clip_2s: bytes
) -> None:
    customer = await make_customer(api, db, tokens=100)
    response = await api.post(
        "/api/v1/swap-face",
        json=video_body(clip_2s, output_format="png"),
        headers=customer.headers,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidOutputFormat"
    broken = await api.post(
        "/api/v1/swap-face",
        json=video_body(clip_2s[: len(clip_2s) // 20]),
        headers=customer.headers,
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "VideoDecodeFailed"
    assert await ledger_kinds(api, customer) == [("recharge", 100)]


async def test_a_video_without_any_face_fails_and_gives_every_held_token_back(
    api, db, tmp_path
) -> None:
    from imageio_ffmpeg import get_ffmpeg_exe

    faceless = tmp_path / "faceless.mp4"
    await asyncio.to_thread(
        subprocess.run,
        [
            get_ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30:duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(faceless),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    customer = await make_customer(api, db, tokens=100)
    response = await api.post(
        "/api/v1/swap-face", json=video_body(faceless.read_bytes()), headers=customer.headers
    )
    assert response.status_code == 202, response.text
    job = await wait_for_job(api, customer, response.json()["job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "NoFaceDetected"
    assert (job["tokens_held"], job["tokens_charged"]) == (20, 0)
    assert await balance(api, customer) == {"balance": 100, "held": 0, "available": 100}


def cut_short_of_its_last_frame(tmp_path) -> bytes:
    """A 6 s, 10 fps upload cut off mid-file (an interrupted upload): its index still
    lists 31 frames (3.1 s: 4 started seconds), but the 31st is incomplete and only 30
    decode (3.0 s: 3 started seconds). The cut is searched for, as encoders differ."""
    from imageio_ffmpeg import get_ffmpeg_exe

    from inference.config import EngineConfig
    from inference.video import probe
    from tests.inference.video.clips import make_video

    plain = make_video(tmp_path / "six.mp4", seconds=6.0, fps=10, audio=False)
    indexed = tmp_path / "faststart.mp4"  # the index first, so a cut file still opens
    subprocess.run(
        [get_ffmpeg_exe(), "-loglevel", "error", "-i", str(plain), "-c", "copy",
         "-movflags", "+faststart", str(indexed)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    data = indexed.read_bytes()
    cut = tmp_path / "cut.mp4"

    def listed(end: int) -> int:
        cut.write_bytes(data[:end])
        return probe(cut, EngineConfig()).frame_count

    # The cuts listing 31 frames: the first found by bisection (the count grows with the
    # length kept), then walked while they still list 31.
    ends = range(len(data) // 3, len(data), 97)
    low, high = 0, len(ends)
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if listed(ends[middle]) < 31 else (low, middle)
    for end in ends[low:]:
        if listed(end) != 31:
            break
        decoded = subprocess.run(
            [get_ffmpeg_exe(), "-v", "error", "-i", str(cut), "-f", "rawvideo",
             "-pix_fmt", "gray", "-"],
            capture_output=True, check=True, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip
        if len(decoded) == 30 * 320 * 180:
            return data[:end]
    raise AssertionError("no cut of this encoder's output leaves its last listed frame short")


async def test_a_video_that_delivers_fewer_seconds_than_it_listed_is_charged_what_it_delivered(
    api, db, tmp_path
) -> None:
    clip = await asyncio.to_thread(cut_short_of_its_last_frame, tmp_path)
    customer = await make_customer(api, db, tokens=100)
    response = await api.post(
        "/api/v1/swap-face",
        json=video_body(clip),
        headers={**customer.headers, "Prefer": "wait=60"},
    )
    assert response.status_code == 200, response.text
    job = await wait_for_job(api, customer, response.json()["job_id"])
    assert job["status"] == "succeeded" and job["result"]["frames"] == 30
    assert (job["tokens_held"], job["tokens_charged"]) == (40, 30)
    assert await balance(api, customer) == {"balance": 70, "held": 0, "available": 70}
    assert (await verify_ledger(api, customer.tenant_id))["ok"] is True


async def test_a_video_mapping_to_a_face_no_frame_has_fails_as_invalid_face_mapping(
    api, db, clip_2s: bytes
) -> None:
    customer = await make_customer(api, db, tokens=100)
    body = video_body(clip_2s, faces=[{"source_face": 0, "target_face": 3}])
    response = await api.post("/api/v1/swap-face", json=body, headers=customer.headers)
    assert response.status_code == 202, response.text
    job = await wait_for_job(api, customer, response.json()["job_id"])
    assert job["status"] == "failed", job
    error = job["error"]
    assert error["code"] == "InvalidFaceMapping" and "target_face 3" in error["message"]
    assert (job["tokens_held"], job["tokens_charged"]) == (20, 0)
    assert await balance(api, customer) == {"balance": 100, "held": 0, "available": 100}


async def test_a_replayed_video_swap_answers_as_its_first_request_did(
    api, db, clip_2s: bytes
) -> None:
    """The contract: a replay returns the first response, same status and body, whatever
    the replay's own Prefer asks (and charges nothing more)."""
    customer = await make_customer(api, db, tokens=100)
    queued = {**customer.headers, "Idempotency-Key": "video-queued"}
    first = await api.post("/api/v1/swap-face", json=video_body(clip_2s), headers=queued)
    assert first.status_code == 202, first.text
    await wait_for_job(api, customer, first.json()["job_id"])  # it has finished since
    again = await api.post(
        "/api/v1/swap-face", json=video_body(clip_2s), headers={**queued, "Prefer": "wait=30"}
    )
    assert (again.status_code, again.json()) == (202, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"

    waited = {**customer.headers, "Idempotency-Key": "video-waited"}
    body = video_body(clip_2s, response="url")
    first = await api.post("/api/v1/swap-face", json=body, headers={**waited, "Prefer": "wait=60"})
    assert first.status_code == 200, first.text
    again = await api.post("/api/v1/swap-face", json=body, headers=waited)  # no Prefer
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["result"]["resolution"] == first.json()["result"]["resolution"]
    assert await balance(api, customer) == {"balance": 60, "held": 0, "available": 60}
