"""The per-tenant concurrent-job cap, the queue metrics, and the periodic cleanup."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text

from app.jobs.media import scratch_root
from app.jobs.upkeep import run_cleanup
from tests.jobs.conftest import (
    balance,
    client_for,
    face,
    job_settings,
    make_customer,
    running_app,
    wait_for_job,
)

OBAMA = base64.b64encode(face("obama.jpg")).decode()
BIDEN = base64.b64encode(face("biden.jpg")).decode()


@pytest.fixture(scope="module")
async def capped_app(settings, tmp_path_factory) -> AsyncIterator[FastAPI]:
    configured = job_settings(
        settings,
        tmp_path_factory.mktemp("capped"),
        jobs_worker_concurrency=2,
        max_concurrent_jobs_per_tenant=1,
        results_retention_seconds=3600,
    )
    async with running_app(configured) as application:
        yield application


@pytest.fixture
async def api(capped_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(capped_app) as client:
        yield client


def gauge(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_tenant_at_its_job_cap_waits_in_the_queue_while_other_tenants_run(
    api, db, clip_long: bytes
) -> None:
    busy = await make_customer(api, db, tokens=500)
    other = await make_customer(api, db, tokens=10)
    video = await api.post(
        "/api/v1/swap-face",
        json={"source": OBAMA, "target": base64.b64encode(clip_long).decode()},
        headers=busy.headers,
    )
    assert video.status_code == 202
    video_id = video.json()["job_id"]
    await wait_for_job(api, busy, video_id, until=lambda j: j["status"] == "processing")

    image = await api.post(
        "/api/v1/swap-face",
        json={"source": OBAMA, "target": BIDEN},
        headers={**busy.headers, "Prefer": "wait=0"},
    )
    assert image.status_code == 202
    image_id = image.json()["job_id"]
    # The worker has a free slot, but this tenant's one slot is taken: another tenant's
    # image goes through, this tenant's stays queued.
    done = await api.post(
        "/api/v1/swap-face", json={"source": OBAMA, "target": BIDEN}, headers=other.headers
    )
    assert done.status_code == 200
    await asyncio.sleep(1.0)  # two housekeeping rounds: the queue gauge is fresh
    job = (await api.get(f"/api/v1/jobs/{image_id}", headers=busy.headers)).json()
    assert job["status"] == "queued"
    assert gauge("swapmeter_jobs_in_queue", kind="image") >= 1
    assert gauge("swapmeter_workers_live") >= 1
    assert gauge("swapmeter_jobs_running", kind="video") == 1

    canceled = await api.post(f"/api/v1/jobs/{video_id}/cancel", headers=busy.headers)
    assert canceled.status_code == 200
    job = await wait_for_job(api, busy, image_id, timeout_s=30)
    assert job["status"] == "succeeded" and job["tokens_charged"] == 1
    assert gauge("swapmeter_job_queue_wait_seconds_count", kind="image") >= 2
    assert gauge("swapmeter_job_run_seconds_count", kind="video", status="canceled") >= 1
    assert gauge("swapmeter_inference_stage_seconds_count", stage="detect") >= 1
    video_job = await wait_for_job(api, busy, video_id)
    spent = video_job["tokens_charged"] + 1
    assert await balance(api, busy) == {"balance": 500 - spent, "held": 0, "available": 500 - spent}


async def test_cleanup_removes_expired_results_stray_scratch_files_and_old_idempotency_keys(
    capped_app, db
) -> None:
    settings = capped_app.state.settings.model_copy(update={"results_retention_seconds": 60})
    store = capped_app.state.result_store
    await store.put("results/t/old.jpg", b"old", "image/jpeg")
    await store.put("results/t/new.jpg", b"new", "image/jpeg")
    old_file = settings.results_path / "results/t/old.jpg"
    day_ago = time.time() - 2 * 86400
    os.utime(old_file, (day_ago, day_ago))
    stray = scratch_root(settings) / "deadbeef" / "output.mp4"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half a video")
    os.utime(stray, (day_ago, day_ago))
    os.utime(stray.parent, (day_ago, day_ago))
    async with db.session() as s:
        await s.execute(
            text(
                "INSERT INTO idempotency_keys (scope, key, method_path, request_hash, created_at) "
                "VALUES ('user:0', 'ancient', 'POST /x', 'h', now() - interval '30 days')"
            )
        )

    await run_cleanup(settings, db, store)

    assert not old_file.exists()
    assert (settings.results_path / "results/t/new.jpg").exists()
    assert not stray.exists() and not stray.parent.exists()
    async with db.session() as s:
        left = (
            await s.execute(text("SELECT count(*) FROM idempotency_keys WHERE key = 'ancient'"))
        ).scalar_one()
    assert left == 0


async def test_a_failing_cleanup_step_does_not_keep_the_others_from_running(capped_app, db) -> None:
    """The result store cannot be listed (a bucket permission, say): old Idempotency-Keys
    are still purged, and so on for the steps after it."""

    class Unlistable:
        async def list_expired(self, before: object) -> list[str]:
            raise RuntimeError("AccessDenied")

    async with db.session() as s:
        await s.execute(
            text(
                "INSERT INTO idempotency_keys (scope, key, method_path, request_hash, created_at) "
                "VALUES ('user:0', 'ancient-2', 'POST /x', 'h', now() - interval '30 days')"
            )
        )

    await run_cleanup(capped_app.state.settings, db, Unlistable())  # type: ignore[arg-type]

    async with db.session() as s:
        left = (
            await s.execute(text("SELECT count(*) FROM idempotency_keys WHERE key = 'ancient-2'"))
        ).scalar_one()
    assert left == 0


async def test_an_api_process_removes_video_uploads_a_killed_one_left_behind(
    settings, tmp_path
) -> None:
    """A video upload is probed from a scratch file that its request deletes; a process
    killed mid-request leaves it. The next API process to start on the host removes it
    (workers, which sweep the rest, may run elsewhere)."""
    configured = job_settings(settings, tmp_path, jobs_inprocess_worker=False)
    uploads = scratch_root(configured) / "uploads"
    uploads.mkdir(parents=True)
    left, live = uploads / "upload-left.video", uploads / "upload-live.video"
    left.write_bytes(b"half an upload")
    live.write_bytes(b"being probed")
    two_hours_ago = time.time() - 7200
    os.utime(left, (two_hours_ago, two_hours_ago))

    async with running_app(configured):
        pass

    assert not left.exists() and live.exists()
