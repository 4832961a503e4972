"""Where billing meets inference: run a claimed job, then settle it (the worker side).

The only module that imports both the engine (``inference``) and, through
``app.jobs.settle``, the ledger. ``JobRunner.run``: read the stored inputs, swap in a
thread (so the worker's event loop keeps renewing the lease), store the result, then
finish the job and capture or release its hold in one transaction guarded by the lease.
(The API side checks uploads before the hold in ``app.jobs.media``, which never imports
this module.)

The engine's modules are imported inside functions: a process loads OpenCV and ONNX
Runtime only when it first runs a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import hashlib
import logging
import shutil
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.db import Database, connection_trouble
from app.core.errors import SETUP_CODES, NotFound, public_message
from app.core.settings import Settings
from app.core.storage import RESULTS_FOLDER, ResultStore, StoredObject, signed_link
from app.jobs import metrics, settle
from app.jobs import repository as repo
from app.jobs.media import image_ext, scratch_root
from app.jobs.repository import JobRecord
from app.jobs.results import delete_stored
from inference.errors import Cancelled, InferenceError, InvalidFaceMapping, NoFaceDetected

log = logging.getLogger(__name__)
# Pauses before finishing a job again when the database could not be reached (a restart,
# a failover, a killed backend): about 9 s in all, inside the lease (30 s by default).
FINISH_RETRY_S = (0.2, 1.0, 3.0, 5.0)


# -- one engine per process ------------------------------------------------------------------

_ENGINES_PROCESS_CACHE: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


def process_engine(settings: Settings) -> Any:
    """The process's Engine for these settings: ONNX sessions load once, on first use."""
    from inference.engine import Engine

    config = settings.engine_config()
    key = repr(config)
    with _ENGINES_LOCK:
        engine = _ENGINES_PROCESS_CACHE.get(key)
        if engine is None:
            engine = _ENGINES_PROCESS_CACHE[key] = Engine(config)
        return engine


# -- running a claimed job -------------------------------------------------------------------


@dataclass
class RunState:
    """Shared between the worker's event loop and the job's thread."""

    cancel: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    cancel_requested: bool = False  # the owner asked to stop
    lost: bool = False  # the lease is gone (or the worker is shutting down): discard
    finishing: bool = False  # the outcome is being written: lease renewals may stop

    def on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress = min(1.0, done / total)


@dataclass(frozen=True)
class RunReport:
    job: JobRecord | None  # the final job; None when the lease was lost or given up
    delivery_id: int | None = None


class _NoopFrameSwapper:
    """Frames out as they came in (benchmarks of everything but the engine)."""

    faces_swapped_frames = 0

    def process(self, frames: list[Any]) -> list[Any]:
        return frames


class JobRunner:
    """Runs claimed jobs of this process; the swap itself happens on ``executor``."""

    def __init__(
        self, settings: Settings, db: Database, store: ResultStore, executor: Executor
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.executor = executor

    async def run(self, job: JobRecord, worker_id: str, state: RunState) -> RunReport:
        # Per attempt, like the result's key: a stale attempt still running somewhere
        # (its lease ran out) must not touch the files of the attempt that replaced it.
        workdir = scratch_root(self.settings) / f"{job.id.hex}-{job.attempts}"
        started = time.monotonic()
        try:
            outcome = await self._execute(job, state, workdir)
            state.finishing = True
            if state.lost:
                await self._discard(outcome)
                return RunReport(None)
            try:
                finished = await self._finish(job, worker_id, outcome)
            except Exception:
                if not _failed(outcome.storing):
                    raise
                log.error("job %s: its result could not be stored", job.id, exc_info=True)
                await self._discard(outcome)
                outcome = _internal_error()
                finished = await self._finish(job, worker_id, outcome)
            if finished is None:
                log.warning("job %s: lease lost before finishing; output discarded", job.id)
                await self._discard(outcome)
                return RunReport(None)
            final, delivery = finished
            await delete_stored(self.store, job.source_key, job.target_key)
            run_s = time.monotonic() - started
            metrics.job_finished(job.kind, final.status, final.error_code, run_s)
            log.info(
                "job %s %s%s in %.2f s",
                job.id,
                final.status,
                f" ({final.error_code})" if final.error_code else "",
                run_s,
            )
            return RunReport(final, delivery)
        finally:
            if job.kind == "video":  # image jobs never make a scratch folder
                await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _finish(
        self, job: JobRecord, worker_id: str, outcome: settle.Outcome
    ) -> tuple[JobRecord, int | None] | None:
        """Finish the job (``_finish_once``), again after a lost database connection: a
        blip must not leave a done job to wait out its lease and spend an attempt. When
        the lost connection took the commit's answer with it, the job row says whether
        the commit landed."""
        broke = False
        for retry_in in (*FINISH_RETRY_S, None):
            try:
                finished = await self._finish_once(job, worker_id, outcome)
            except Exception as exc:
                if retry_in is None or _failed(outcome.storing) or not connection_trouble(exc):
                    raise  # (a result that could not be stored is handled by run())
                log.warning(
                    "job %s: the database could not be reached while finishing (%s); "
                    "trying again in %g s",
                    job.id,
                    type(getattr(exc, "orig", None) or exc).__name__,
                    retry_in,
                )
                broke = True
                await asyncio.sleep(retry_in)
                continue
            if finished is None and broke:
                # Not processing any more: perhaps because the broken try did commit.
                landed = await self._finished_by(job, worker_id, outcome)
                if landed is not None:
                    return landed, None  # its webhook, if any, goes out with the sweep
            return finished
        raise AssertionError("unreachable")

    async def _finished_by(
        self, job: JobRecord, worker_id: str, outcome: settle.Outcome
    ) -> JobRecord | None:
        """The job as this attempt finished it, when that commit landed; else None (also
        when someone else ended it meanwhile, e.g. the sweep of a lapsed lease, which
        keeps the worker and attempt but not this outcome's code and charge)."""
        async with self.db.session() as session:
            now = await repo.get_job(session, job.id)
        if (
            now is not None
            and now.finished_at is not None
            and (now.worker_id, now.attempts) == (worker_id, job.attempts)
            and (now.status, now.error_code, now.result_key)
            == (outcome.status, outcome.error_code, outcome.result_key)
            and now.tokens_charged == settle.charge_for(job, outcome)
        ):
            return now
        return None

    async def _finish_once(
        self, job: JobRecord, worker_id: str, outcome: settle.Outcome
    ) -> tuple[JobRecord, int | None] | None:
        """One transaction: the outcome, the hold settled and, once the result's write
        (which ran meanwhile) succeeded, the commit."""
        try:
            if outcome.storing is not None:
                # Let the write start now, not at the transaction's first round trip: its
                # fsync then overlaps that transaction from the start.
                await asyncio.sleep(0)
            async with self.db.session() as session:
                return await settle.finish_job(
                    session,
                    job,
                    worker_id,
                    outcome,
                    webhook_lease_s=self.settings.jobs_webhook_lease_seconds,
                )
        finally:
            if outcome.storing is not None:  # never left running behind a failure
                await asyncio.wait([outcome.storing])

    async def _discard(self, outcome: settle.Outcome) -> None:
        if outcome.storing is not None:  # let the write end, then delete what it wrote
            with contextlib.suppress(Exception):
                await outcome.storing
        if outcome.result_key:
            await delete_stored(self.store, outcome.result_key)

    async def _execute(self, job: JobRecord, state: RunState, workdir: Path) -> settle.Outcome:
        loop = asyncio.get_running_loop()
        try:
            if state.cancel.is_set():
                raise Cancelled("canceled before it started")
            if job.kind == "image":
                source, target = await asyncio.gather(
                    self._read(job.source_key), self._read(job.target_key)
                )
                # The context goes along (unlike to_thread, run_in_executor drops it), so
                # the engine's log lines carry the job's ids.
                image, sha256 = await loop.run_in_executor(
                    self.executor,
                    contextvars.copy_context().run,
                    self._swap_image,
                    source,
                    target,
                    job.params,
                )
                return self._store_image(job, image, sha256)
            source = await self._read(job.source_key)
            target_path = await self._local_file(job.target_key, workdir)
            output = workdir / "output.mp4"
            video = await loop.run_in_executor(
                self.executor,
                contextvars.copy_context().run,
                self._swap_video,
                source,
                target_path,
                output,
                job,
                state,
            )
            if video.faces_swapped_frames == 0 and self.settings.jobs_swapper != "noop":
                # Nothing of the user's was swapped: a failed job, its hold back in full.
                raise _nothing_swapped(job.params["faces"])
            return await self._store_video(job, video, output)
        except Cancelled as exc:
            seconds = _seconds_done(exc) or 0.0
            return settle.Outcome(
                "canceled",
                seconds_done=seconds if job.kind == "video" else None,
                error_code="Canceled",
                error_message=(
                    f"Canceled after {seconds:.2f} s of video"
                    if job.kind == "video"
                    else "Canceled before the image was swapped"
                ),
            )
        except InferenceError as exc:
            if exc.code in SETUP_CODES:
                log.error("job %s failed with %s: %s", job.id, exc.code, exc.message)
            return settle.Outcome(
                "failed",
                seconds_done=_seconds_done(exc),
                error_code=exc.code,
                error_message=public_message(exc),
            )
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            return _internal_error()

    async def _read(self, key: str) -> bytes:
        try:
            return await self.store.read(key)
        except NotFound as exc:
            raise RuntimeError(f"job input {key} is missing from the result store") from exc

    async def _local_file(self, key: str, workdir: Path) -> Path:
        path = self.store.path_for(key)
        if path is not None:
            return path
        local = workdir / "target.video"
        data = await self._read(key)
        await asyncio.to_thread(_write_file, local, data)
        return local

    # -- in the executor's thread ----------------------------------------------------------

    def _swap_image(self, source: bytes, target: bytes, params: dict[str, Any]) -> tuple[Any, str]:
        """The swapped image and its SHA-256 (hashed here, while still on this thread)."""
        if self.settings.jobs_swapper == "noop":
            image: Any = _noop_image(target, params)
        else:
            image = process_engine(self.settings).swap_image(
                source,
                target,
                faces=params["faces"],
                output_format=params["output_format"],
                enhance=params["enhance"],
                watermark=params["watermark"],
            )
        return image, hashlib.sha256(image.data).hexdigest()

    def _swap_video(
        self, source: bytes, target: Path, output: Path, job: JobRecord, state: RunState
    ) -> Any:
        from inference.video import swap_video

        params = job.params
        if self.settings.jobs_swapper == "noop":
            swapper: Any = _NoopFrameSwapper()
            config = self.settings.engine_config()
        else:
            swapper = process_engine(self.settings)
            config = swapper.config
        output.parent.mkdir(parents=True, exist_ok=True)
        # The engine's own temporary files live in the job's scratch folder, which the
        # cleanup loop sweeps even when this process is killed mid-video.
        config = dataclasses.replace(config, temp_dir=output.parent)
        return swap_video(
            swapper,
            source,
            target,
            output,
            faces=params["faces"],
            keep_fps=params["keep_fps"],
            keep_audio=params["keep_audio"],
            enhance=params["enhance"],
            watermark=params["watermark"],
            progress=state.on_progress,
            cancel=state.cancel,
            config=config,
        )

    # -- results ---------------------------------------------------------------------------

    def _result_key(self, job: JobRecord, ext: str) -> str:
        """Unique per attempt: a stale attempt discards its own output, never the result
        of the attempt that finished the job."""
        return f"{RESULTS_FOLDER}{job.tenant_id.hex}/{job.id.hex}-{job.attempts}.{ext}"

    def _result_json(self, key: str, stored: Any) -> dict[str, Any]:
        return {
            **signed_link(self.store, key, self.settings.results_url_ttl_seconds),
            "content_type": stored.content_type,
            "size": stored.size,
            "sha256": stored.sha256,
        }

    def _store_image(self, job: JobRecord, image: Any, sha256: str) -> settle.Outcome:
        """Start writing the result; the job is finished meanwhile and commits once it is
        stored (``Outcome.storing``): the fsync overlaps the database round trips."""
        metrics.stage_timings(image.timings)
        ext = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}.get(
            image.mime, job.params["output_format"]
        )
        key = self._result_key(job, ext)
        storing = asyncio.ensure_future(self.store.put(key, image.data, image.mime))
        stored = StoredObject(key, len(image.data), image.mime, sha256)
        result = {
            **self._result_json(key, stored),
            "duration": round(sum(image.timings.values()), 4),
            "resolution": f"{image.width}x{image.height}",
            "faces_swapped": image.faces_swapped,
            "enhance_applied": image.enhance_applied,
        }
        return settle.Outcome("succeeded", result=result, result_key=key, storing=storing)

    async def _store_video(self, job: JobRecord, video: Any, output: Path) -> settle.Outcome:
        metrics.stage_timings({k: v for k, v in video.timings.items() if k in ("probe", "process")})
        key = self._result_key(job, "mp4")
        stored = await self.store.put(key, output, "video/mp4")
        result = {
            **self._result_json(key, stored),
            "duration": round(video.timings.get("total", 0.0), 4),
            "resolution": f"{video.width}x{video.height}",
            "faces_swapped": video.faces_swapped_frames,
            "video_seconds": round(video.duration, 3),
            "frames": video.frames,
            "fps": video.fps,
            "has_audio": video.has_audio,
        }
        return settle.Outcome(
            "succeeded",
            seconds_done=video.seconds_done,
            short=not video.complete,
            result=result,
            result_key=key,
        )


def _nothing_swapped(faces: Any) -> InferenceError:
    """Why a video had no face swapped: with explicit pairs, most likely a target_face
    that no frame has (as an image says InvalidFaceMapping), else no face at all."""
    if isinstance(faces, list) and faces:
        wanted = sorted({int(pair["target_face"]) for pair in faces})
        return InvalidFaceMapping(
            f"No frame of the video has target_face {', '.join(map(str, wanted))}, or no "
            "face at all: faces are numbered from 0, left to right, in each frame",
            target_faces=wanted,
        )
    return NoFaceDetected("No face was found in any frame of the video")


def _internal_error() -> settle.Outcome:
    return settle.Outcome(
        "failed",
        seconds_done=None,
        error_code="InternalError",
        error_message="Internal error while swapping; no Tokens were charged",
    )


def _failed(future: asyncio.Future[Any] | None) -> bool:
    """Whether ``future`` ended with an exception (the result's write failed)."""
    return (
        future is not None
        and future.done()
        and not future.cancelled()
        and (future.exception() is not None)
    )


def _seconds_done(exc: InferenceError) -> float | None:
    """Video seconds processed before the error (the engine puts it in the details)."""
    value = exc.details.get("seconds_done")
    return float(value) if isinstance(value, int | float) else None


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass
class _NoopImage:
    data: bytes
    mime: str
    width: int
    height: int
    faces_swapped: int = 0
    enhance_applied: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def _noop_image(target: bytes, params: dict[str, Any]) -> _NoopImage:
    """The target unchanged: benchmarks measure the API and metering, not the engine."""
    ext = image_ext(target)
    mime = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(ext, "image/jpeg")
    target_info = params.get("target") or {}
    return _NoopImage(
        target, mime, int(target_info.get("width") or 0), int(target_info.get("height") or 0)
    )
