"""Processing lanes: batches of frames swapped on one thread per FrameSwapper, in order.

Given an Engine, a swap makes one FrameSwapper per lane and hands batches to the lanes in
turn; each lane's tracking restarts at every batch it gets, since its previous batch was
not the one before. A ready FrameSwapper is a single lane run in the calling thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

import numpy as np

from inference.config import EngineConfig
from inference.errors import InferenceError


class FrameSwapperLike(Protocol):
    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]: ...


def processing_lanes(config: EngineConfig) -> int:
    """How many batches are swapped at once: ``config.video_workers``, or one per core."""
    wanted = int(config.video_workers)
    if wanted > 0:
        return wanted
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def frame_swappers(
    engine_or_swapper: Any,
    source_bytes: bytes | None,
    faces: Any,
    enhance: bool,
    watermark: bool,
    lanes: int,
) -> list[FrameSwapperLike]:
    """One FrameSwapper per processing lane (an Engine can make several; a ready
    FrameSwapper is a single lane)."""
    if hasattr(engine_or_swapper, "frame_swapper"):
        return [
            engine_or_swapper.frame_swapper(
                source_bytes, faces=faces, enhance=enhance, watermark=watermark
            )
            for _ in range(max(1, lanes))
        ]
    if hasattr(engine_or_swapper, "process"):
        return [engine_or_swapper]
    raise TypeError("swap_video needs an Engine or an object with process(frames)")


class Lanes:
    """Swaps batches on the lanes in turn; each batch's future gives
    (frames out, frames with a face swapped, seconds spent)."""

    def __init__(self, swappers: list[FrameSwapperLike]) -> None:
        self.swappers = swappers
        self.submitted = 0
        # One single-thread executor per lane keeps each FrameSwapper on one thread and
        # its batches in order; with one lane the calling thread does the work itself.
        self._executors = (
            [
                ThreadPoolExecutor(1, thread_name_prefix=f"swapmeter-video-lane{i}")
                for i in range(len(swappers))
            ]
            if len(swappers) > 1
            else []
        )

    def __len__(self) -> int:
        return len(self.swappers)

    def submit(self, batch: list[np.ndarray]) -> Future[Any]:
        lane = self.submitted % len(self.swappers)
        restart = len(self.swappers) > 1 and self.submitted >= len(self.swappers)
        self.submitted += 1
        job = partial(_process_batch, self.swappers[lane], batch, restart)
        return self._executors[lane].submit(job) if self._executors else _inline(job)

    def shutdown(self) -> None:
        for executor in self._executors:
            # A lane still busy finishes its batch (cancel waits at most that long).
            executor.shutdown(wait=True, cancel_futures=True)


def _inline(fn: Callable[[], Any]) -> Future[Any]:
    """Run ``fn`` in the calling thread, packaged like an executor's future."""
    fut: Future[Any] = Future()
    try:
        fut.set_result(fn())
    except BaseException as exc:
        fut.set_exception(exc)
    return fut


def _process_batch(
    swapper: Any, batch: list[np.ndarray], restart: bool
) -> tuple[list[np.ndarray], int, float]:
    """Run one batch through a lane: (frames out, frames with a face swapped, seconds)."""
    t0 = time.perf_counter()
    if restart:
        _restart_tracking(swapper)
    running = getattr(swapper, "faces_swapped_frames", None)
    out = swapper.process(batch)
    if len(out) != len(batch):
        raise InferenceError(f"the frame swapper returned {len(out)} frames for {len(batch)}")
    swapped = _faces_swapped_in_batch(
        swapper, len(batch), running if isinstance(running, int) else None
    )
    return out, swapped, time.perf_counter() - t0


def _restart_tracking(swapper: Any) -> None:
    """Tell a lane's swapper that its next batch does not follow its previous one."""
    reset = getattr(swapper, "reset", None)
    if callable(reset):
        reset()
        return
    tracker = getattr(swapper, "tracker", None)
    if tracker is not None and callable(getattr(tracker, "reset", None)):
        tracker.reset()


def _faces_swapped_in_batch(swapper: Any, n_frames: int, before: int | None) -> int:
    """Frames of the last batch in which at least one face was swapped.

    FrameSwappers report this either as a per-frame list for the last batch
    (``last_faces_swapped``) or as a running count (``faces_swapped_frames``).
    """
    per_frame = getattr(swapper, "last_faces_swapped", None)
    if isinstance(per_frame, Sequence) and len(per_frame) == n_frames:
        return sum(1 for n in per_frame if n)
    running = getattr(swapper, "faces_swapped_frames", None)
    if isinstance(running, int) and before is not None:
        return max(0, running - before)
    return 0
