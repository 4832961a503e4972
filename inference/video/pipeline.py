"""The swap of a whole video: decode, swap on the lanes, encode, with cancel and progress.

Decoding, face swapping and encoding overlap: a reader thread pulls raw BGR frames from
an ffmpeg decoder, batches are swapped on one lane per core (or in the calling thread),
and a writer thread feeds an ffmpeg encoder, so no core waits on another stage.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from inference.config import EngineConfig
from inference.errors import Cancelled, InferenceError, VideoDecodeFailed
from inference.video.ffmpeg import (
    OutputPlan,
    decoder_command,
    encoder_command,
    reap,
    spawn,
    tail,
)
from inference.video.lanes import FrameSwapperLike, Lanes, frame_swappers, processing_lanes
from inference.video.probe import VideoInfo, probe
from inference.video.stages import (
    EOF_MARK,
    POLL_S,
    QUEUE_BATCHES,
    batch_frames,
    put,
    raise_first,
    reader,
    writer,
)
from inference.video.workdir import make_workdir, sweep_stale_workdirs

CancelCheck = Callable[[], bool] | threading.Event | None
ProgressCallback = Callable[[int, int], None] | None


@dataclass(frozen=True)
class VideoResult:
    frames: int
    fps: float
    duration: float
    width: int
    height: int
    has_audio: bool
    faces_swapped_frames: int
    seconds_done: float  # delivered seconds (frames / fps), what a partial bill is based on
    # Every frame the probe listed came out (resampled: to within the frame that rounding
    # the new rate leaves). False for a damaged upload whose last frames did not decode.
    complete: bool = True
    output_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def swap_video(
    engine_or_frame_swapper: Any,
    source_bytes: bytes | None,
    input_path: Path | str,
    output_path: Path | str,
    *,
    faces: Any = "largest",
    keep_fps: bool = True,
    keep_audio: bool = True,
    enhance: bool = False,
    watermark: bool = True,
    progress: ProgressCallback = None,
    cancel: CancelCheck = None,
    config: EngineConfig | None = None,
    reduced_fps: float = 25.0,
    info: VideoInfo | None = None,
    lanes: int | None = None,
) -> VideoResult:
    """Swap faces in every frame of ``input_path`` and write an H.264 MP4 to ``output_path``.

    ``engine_or_frame_swapper`` is an Engine (``source_bytes`` is the face to put in) or a
    ready FrameSwapper. With ``keep_fps`` the output has the source's frame rate, frame
    count and duration; without it, sources faster than ``reduced_fps`` are resampled to
    it. ``cancel`` is polled between batches and raises Cancelled(frames_done=...).
    Errors carry ``frames_done`` and ``seconds_done`` in their details; ``output_path``
    is only written when the whole video succeeded.

    Given an Engine, batches are swapped on ``lanes`` threads at once (default
    ``processing_lanes(config)``), each lane with its own FrameSwapper whose tracking
    restarts at every batch it gets; a ready FrameSwapper runs in the calling thread.
    """
    config = config or EngineConfig()
    input_path, output_path = Path(input_path), Path(output_path)
    started = time.perf_counter()
    info = info or probe(input_path, config)
    timings: dict[str, float] = {"probe": time.perf_counter() - started}

    # Resolve the source face before any child process starts: a bad source fails fast.
    swappers = frame_swappers(
        engine_or_frame_swapper,
        source_bytes,
        faces,
        enhance,
        watermark,
        lanes if lanes is not None else processing_lanes(config),
    )
    plan = OutputPlan.of(info, keep_fps=keep_fps, keep_audio=keep_audio, reduced_fps=reduced_fps)
    sweep_stale_workdirs(config.temp_dir)
    run = _Run(plan, config)
    try:
        run.start(input_path, info, swappers)
        timings["process"] = run.swap_frames(cancel, progress)
        run.finish()
        if progress is not None and run.frames_done != plan.total:
            progress(run.frames_done, run.frames_done)  # the probe's count was off: end at 100 %
        output_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run.output), str(output_path))
        timings["total"] = time.perf_counter() - started
        return run.result(output_path, timings)
    except (BrokenPipeError, ConnectionResetError) as exc:
        reason = tail(run.workdir / "encode.log") or str(exc)
        raise InferenceError(f"video encoding failed: {reason}", **run.details()) from exc
    except InferenceError as exc:
        for key, value in run.details().items():
            exc.details.setdefault(key, value)
        if isinstance(exc, Cancelled):
            exc.frames_done = run.frames_done
        raise
    finally:
        run.close()


def _is_cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class _Run:
    """One swap's children, threads, lanes and counts, torn down the same way on every exit.

    ``start`` launches the decoder and encoder with a thread on each pipe, ``swap_frames``
    moves batches from the one through the lanes to the other, ``finish`` checks that both
    children ended well, and ``close`` (always) stops and removes everything.
    """

    def __init__(self, plan: OutputPlan, config: EngineConfig) -> None:
        self.plan = plan
        self.config = config
        self.workdir = make_workdir(config.temp_dir)
        self.output = self.workdir / "output.mp4"
        self.decoder: subprocess.Popen[bytes] | None = None
        self.encoder: subprocess.Popen[bytes] | None = None
        self.stop = threading.Event()
        self.errors: list[BaseException] = []  # the stage threads' failures
        self.threads: list[threading.Thread] = []
        self.lanes: Lanes | None = None
        self.logs: list[IO[bytes]] = []
        self.decoded: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.to_encode: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.frames_done = 0
        self.swapped_frames = 0

    def details(self) -> dict[str, Any]:
        """What an error reports of the work done."""
        return {"frames_done": self.frames_done, "seconds_done": self.frames_done / self.plan.fps}

    def _log(self, name: str) -> IO[bytes]:
        fh = (self.workdir / name).open("wb")
        self.logs.append(fh)
        return fh

    def start(self, input_path: Path, info: VideoInfo, swappers: list[FrameSwapperLike]) -> None:
        decode_cmd = decoder_command(input_path, info, self.plan)
        encode_cmd = encoder_command(input_path, info, self.plan, self.config, self.output)
        decode_log, encode_log = self._log("decode.log"), self._log("encode.log")
        self.decoder = spawn(
            decode_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=decode_log
        )
        self.encoder = spawn(
            encode_cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=encode_log
        )
        batch_size = batch_frames(self.config.video_batch_frames, self.plan.shape)
        self.threads = [
            threading.Thread(
                target=reader,
                args=(
                    self.decoder,
                    self.plan.shape,
                    batch_size,
                    self.decoded,
                    self.stop,
                    self.errors,
                ),
                name="swapmeter-video-reader",
                daemon=True,
            ),
            threading.Thread(
                target=writer,
                args=(self.encoder, self.to_encode, self.stop, self.errors),
                name="swapmeter-video-writer",
                daemon=True,
            ),
        ]
        for t in self.threads:
            t.start()
        self.lanes = Lanes(swappers)

    def swap_frames(self, cancel: CancelCheck, progress: ProgressCallback) -> float:
        """Hand decoded batches to the lanes and swapped ones, in order, to the encoder.

        Returns the seconds the lanes spent swapping. Stops at the decoder's end or at a
        stage thread's failure (which ``finish`` raises); raises Cancelled when asked.
        """
        assert self.lanes is not None
        processing = 0.0
        pending: deque[Future[Any]] = deque()
        eof = False
        while True:
            if _is_cancelled(cancel):
                raise Cancelled(
                    f"cancelled after {self.frames_done} of {self.plan.total} frames",
                    **self.details(),
                )
            if not eof and len(pending) < len(self.lanes):
                try:
                    batch = self.decoded.get(timeout=POLL_S)
                except queue.Empty:
                    if self.errors:
                        break
                    batch = None
                if batch is EOF_MARK:
                    eof = True
                elif batch is not None:
                    pending.append(self.lanes.submit(batch))
                    continue
            if not pending:
                if eof or self.errors:
                    break
                continue
            done = self._swapped(pending[0])
            if done is None:
                continue
            pending.popleft()
            out_frames, swapped, seconds = done
            processing += seconds
            self.swapped_frames += swapped
            if not put(self.to_encode, out_frames, self.stop):
                break  # the writer failed; reported by ``finish``
            self.frames_done += len(out_frames)
            if progress is not None:
                progress(self.frames_done, max(self.plan.total, self.frames_done))
        return processing

    def _swapped(self, future: Future[Any]) -> tuple[list[np.ndarray], int, float] | None:
        """A lane's batch once it is done (None while it is not), its failure typed."""
        try:
            result: tuple[list[np.ndarray], int, float] = future.result(timeout=POLL_S)
        except FutureTimeout:
            return None
        except InferenceError as exc:
            exc.details.update(self.details())
            raise
        except Exception as exc:
            raise InferenceError(f"frame processing failed: {exc}", **self.details()) from exc
        return result

    def finish(self) -> None:
        """Close the encoder's input and wait for both children; raise what went wrong."""
        assert self.decoder is not None and self.encoder is not None
        raise_first(self.errors, self.details())
        put(self.to_encode, EOF_MARK, self.stop)
        for t in self.threads:
            t.join()
        raise_first(self.errors, self.details())
        decode_rc = self.decoder.wait()
        encode_rc = self.encoder.wait()
        if decode_rc != 0 or self.frames_done == 0:
            raise VideoDecodeFailed(
                "the video could not be decoded"
                + (f": {tail(self.workdir / 'decode.log')}" if decode_rc else " (no frames)"),
                **self.details(),
            )
        if encode_rc != 0:
            raise InferenceError(
                f"video encoding failed: {tail(self.workdir / 'encode.log')}", **self.details()
            )

    def result(self, output_path: Path, timings: dict[str, float]) -> VideoResult:
        plan, frames = self.plan, self.frames_done
        return VideoResult(
            frames=frames,
            fps=plan.fps,
            duration=frames / plan.fps,
            width=plan.width,
            height=plan.height,
            has_audio=plan.with_audio,
            faces_swapped_frames=self.swapped_frames,
            seconds_done=frames / plan.fps,
            complete=plan.complete(frames),
            output_path=output_path,
            timings=timings,
        )

    def close(self) -> None:
        self.stop.set()
        if self.lanes is not None:
            self.lanes.shutdown()
        reap(self.decoder)
        reap(self.encoder)
        for t in self.threads:
            t.join(timeout=10)
        for fh in self.logs:
            fh.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
