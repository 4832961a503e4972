"""Video pipeline: probe a file, swap faces frame by frame, re-encode to H.264 MP4.

Decoding, face swapping and encoding overlap: a reader thread pulls raw BGR frames from
an ffmpeg decoder, batches are swapped on one lane per core (or in the calling thread),
and a writer thread feeds an ffmpeg encoder, so no core waits on another stage.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from inference.config import EngineConfig
from inference.errors import (
    Cancelled,
    ImagePixelExceed,
    InferenceError,
    VideoDecodeFailed,
    VideoTooLong,
)

log = logging.getLogger(__name__)

# Demuxers a user upload may be opened with: the containers ``media.sniff`` admits (ISO
# BMFF / QuickTime, Matroska / WebM, AVI), nothing else. Playlist-like formats (hls,
# concat, image2 patterns) would make ffmpeg open other files or URLs; raw elementary
# streams (h264, hevc, ...) carry no timestamps, so a file with a container's magic in
# front of one would be measured as lasting a frame and billed as such, however long.
ALLOWED_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi"
MIN_FPS, MAX_FPS = 0.5, 480.0  # frame rates a video may have
# Audio codecs MP4 carries as is; anything else is re-encoded to AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
# Channel layouts the AAC encoder takes as they are; other audio is mixed down to stereo.
AAC_LAYOUTS = frozenset(
    {"mono", "stereo", "3.0", "4.0", "5.0", "5.0(side)", "5.1", "5.1(side)", "7.1"}
)
EOF_MARK = object()
QUEUE_BATCHES = 2  # batches buffered between stages: enough to overlap, bounded memory
POLL_S = 0.1
BATCH_BYTES = 64 << 20  # raw frames per batch, at most
WORKDIR_PREFIX = "swapmeter-video-"
STALE_WORKDIR_S = 600.0


class FrameSwapperLike(Protocol):
    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]: ...


CancelCheck = Callable[[], bool] | threading.Event | None
ProgressCallback = Callable[[int, int], None] | None


@dataclass(frozen=True)
class VideoInfo:
    # The video track's own length, from its first frame's start to its last frame's end
    # (what a swap processes and what is billed), in seconds.
    duration: float
    fps: float
    frame_count: int
    width: int  # as decoded, i.e. after the rotation ffmpeg applies
    height: int
    has_audio: bool
    codec: str
    audio_codec: str | None = None
    audio_layout: str | None = None  # as ffmpeg names it: "mono", "stereo", "5.1(side)"
    rotation: int = 0
    fps_rational: str = ""  # exact rate for ffmpeg, e.g. "30000/1001"
    video_stream: int = 0  # index of the stream within the file
    # When the first frame shows, in seconds from the file's start: a video track may start
    # after its soundtrack, which is then read from this point, so picture and sound agree.
    start: float = 0.0
    # Whether spacing the frames evenly at ``fps`` leaves each within half a frame of its
    # own time (no further than resampling would move it). Phones often record a variable
    # rate; such a video is resampled to ``fps`` when swapped, so that its picture keeps
    # pace with its sound.
    constant_rate: bool = True
    # The shape of a pixel as decoded (after rotation), for ffmpeg's setsar: "1" when
    # square, "4/3" for an anamorphic 960x720 shown as 16:9.
    sample_aspect: str = "1"


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


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _input_args(path: Path) -> list[str]:
    # "file:" stops a crafted name being read as a protocol; the whitelists keep ffmpeg
    # from following references inside the file to other files or the network.
    return [
        "-protocol_whitelist",
        "file,pipe",
        "-format_whitelist",
        ALLOWED_DEMUXERS,
        "-i",
        f"file:{path.resolve()}",
    ]


# -- probing ----------------------------------------------------------------------------

_STREAM = re.compile(
    r"^\s*Stream #(\d+):(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?:\s*(Video|Audio):\s*(.*)$"
)
_SIZE = re.compile(r"(?<![\w/])(\d{1,6})x(\d{1,6})(?=[\s,\[]|$)")
_FPS = re.compile(r"([\d.]+)(k?) fps")
_TBR = re.compile(r"([\d.]+)(k?) tbr")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_DECODE_ERRORS = (
    "Invalid data found",
    "moov atom not found",
    "could not find codec parameters",
    "Error opening input",
    "does not contain any stream",
    "Invalid argument",
    "No such file",
)


def _rate(value: str, kilo: str) -> float:
    rate = float(value) * (1000 if kilo else 1)
    return rate


def _exact_rate(fps: float) -> str:
    """ffmpeg prints 29.97 for 30000/1001: map such rates back to the exact fraction."""
    for base in (24, 30, 48, 60, 120):
        ntsc = base * 1000 / 1001
        if abs(fps - ntsc) < 0.006:
            return f"{base * 1000}/1001"
    if abs(fps - round(fps)) < 1e-3:
        return str(int(round(fps)))
    return f"{fps:.6f}"


def _rate_value(rational: str) -> float:
    if "/" in rational:
        num, den = rational.split("/")
        return float(num) / float(den)
    return float(rational)


def _run(
    cmd: list[str], timeout: float, stdout: IO[bytes] | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # run() kills and reaps the child itself
        raise VideoDecodeFailed("probing the video timed out") from exc


def probe(path: Path | str, config: EngineConfig | None = None) -> VideoInfo:
    """Duration, start, fps, exact frame count, size, pixel shape, audio and codec.

    Raises VideoDecodeFailed (empty, not a video, no video stream, or one without frames
    or timestamps), VideoTooLong and ImagePixelExceed (frames larger than the configured
    limits).
    """
    config = config or EngineConfig()
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoDecodeFailed(f"cannot read the video file: {exc.strerror}") from exc
    if size == 0:
        raise VideoDecodeFailed("the video file is empty")

    header = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", *_input_args(path)], timeout=60)
    text = header.stderr.decode("utf-8", "replace")
    if "Input #0" not in text:
        reason = next((e for e in _DECODE_ERRORS if e.lower() in text.lower()), "unreadable")
        raise VideoDecodeFailed(f"the file could not be read as a video ({reason})")

    video_line: str | None = None
    video_index = 0
    audio_codec: str | None = None
    audio_layout: str | None = None
    rotation = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _STREAM.match(line)
        if not m:
            continue
        kind, rest = m.group(3), m.group(4)
        if kind == "Video" and video_line is None and "attached pic" not in rest:
            video_line, video_index = rest, int(m.group(2))
            # Side data (rotation) is printed in the lines under the stream, after its
            # metadata, which may run long (a Matroska file's tags): read to the block's end.
            indent = len(line) - len(line.lstrip())
            for follow in lines[i + 1 :]:
                if _STREAM.match(follow) or len(follow) - len(follow.lstrip()) <= indent:
                    break
                r = _ROTATION.search(follow)
                if r:
                    rotation = int(round(float(r.group(1)))) % 360
        elif kind == "Audio" and audio_codec is None:
            audio_codec = rest.split()[0].strip(",")
            fields = [f.strip() for f in rest.split(",")]
            audio_layout = fields[2] if len(fields) > 2 else None  # "stereo", "5.1(side)"
    if video_line is None:
        raise VideoDecodeFailed("the file has no video stream")

    codec = video_line.split()[0].strip(",")
    size_match = _SIZE.search(video_line)
    if not size_match:
        raise VideoDecodeFailed("the video stream has no frame size")
    width, height = int(size_match.group(1)), int(size_match.group(2))
    if rotation in (90, 270):
        width, height = height, width
    if width <= 0 or height <= 0:
        raise VideoDecodeFailed("the video stream has an empty frame size")
    if max(width, height) > config.max_video_side or width * height > config.max_image_pixels:
        raise ImagePixelExceed(
            f"video frames are {width}x{height}; the limit is {config.max_video_side} pixels "
            f"per side and {config.max_image_pixels} pixels per frame",
            width=width,
            height=height,
        )

    fps_match = _FPS.search(video_line) or _TBR.search(video_line)
    fps = _rate(fps_match.group(1), fps_match.group(2)) if fps_match else 0.0
    if not (MIN_FPS <= fps <= MAX_FPS):
        raise VideoDecodeFailed(f"the video has an unusable frame rate ({fps:g} fps)")
    fps_rational = _exact_rate(fps)
    fps = _rate_value(fps_rational)

    # The length is the video stream's own, measured from its packets (what a swap
    # processes and what is billed), never the container's header: that one may cover a
    # longer audio track, or claim anything at all (a file cut short, a header edited to
    # say 1 s for a 30 s video).
    track = _measure_track(path, video_index, fps, config)
    duration = track.end - track.start
    if duration > config.max_video_seconds:
        raise VideoTooLong(
            f"the video lasts {duration:.1f} s; the limit is {config.max_video_seconds:g} s",
            duration=duration,
        )
    sar = track.sample_aspect
    if rotation in (90, 270):
        sar = 1 / sar  # the decoder turns the picture, and with it each pixel
    return VideoInfo(
        duration=duration,
        fps=fps,
        frame_count=track.frames,
        width=width,
        height=height,
        has_audio=audio_codec is not None,
        codec=codec,
        audio_codec=audio_codec,
        audio_layout=audio_layout,
        rotation=rotation,
        fps_rational=fps_rational,
        video_stream=video_index,
        start=track.start,
        constant_rate=track.constant_rate,
        sample_aspect=str(sar),
    )


@dataclass(frozen=True)
class _Track:
    frames: int
    start: float  # the first frame's time, seconds from the file's start
    end: float  # when the last frame (in time) stops showing
    constant_rate: bool
    sample_aspect: Fraction


_NO_TIMESTAMP = -(2**63)  # how ffmpeg prints a packet's missing pts or dts


def _fraction(value: str) -> Fraction:
    """``N/D`` as ffmpeg prints it; 0 for anything else (0/0 included)."""
    try:
        return Fraction(value.strip())
    except (ValueError, ZeroDivisionError):
        return Fraction(0)


def _ticks(value: str) -> int | None:
    try:
        ticks = int(value)
    except ValueError:
        return None
    return None if ticks == _NO_TIMESTAMP else ticks


def _measure_track(path: Path, stream: int, fps: float, config: EngineConfig) -> _Track:
    """Frame count, times and pixel shape of a video stream, from a listing of its packets.

    The packets are copied to ffmpeg's framecrc muxer (no decoding), which lists the
    stream's timebase and pixel shape, then one line per packet: ``stream, dts, pts,
    duration, size, crc``. Times are relative to the file's start (ffmpeg's default), the
    frames' order is their display order (by pts), and the last frame ends at its pts plus
    its duration. The listing goes to a temporary file: its size grows with the packet
    count, which is capped at the most frames an accepted video can have (its longest
    length at the highest rate), so a crafted upload of countless tiny packets costs
    neither disk nor time.
    """
    most = math.ceil(config.max_video_seconds * MAX_FPS)
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *_input_args(path),
        "-map",
        f"0:{stream}",
        "-c",
        "copy",
        "-frames:v",
        str(most + 1),
        "-f",
        "framecrc",
        "-",
    ]
    with tempfile.TemporaryFile(dir=config.temp_dir) as listing:
        result = _run(cmd, timeout=300, stdout=listing)
        if result.returncode != 0:
            err = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise VideoDecodeFailed(
                "the video stream could not be read" + (f" ({err[-1][:200]})" if err else "")
            )
        listing.seek(0)
        timebase, sample_aspect = Fraction(0), Fraction(0)
        packets, frames, end = 0, 0, -math.inf
        times = array("q")  # each timed frame's pts, in timebase units
        for raw in listing:
            line = raw.decode("ascii", "replace")
            if line.startswith("#"):
                key, _, value = line[1:].partition(":")
                if key == "tb 0":
                    timebase = _fraction(value)
                elif key == "sar 0":
                    sample_aspect = _fraction(value)
                continue
            fields = line.split(",")
            if len(fields) < 4:
                continue
            packets += 1
            # AVI leaves the pts of some frames out: their dts is when they show.
            pts = _ticks(fields[2])
            at = pts if pts is not None else _ticks(fields[1])
            if at is not None and at < 0:
                # Before the file's start: frames an MP4 edit list hides (a clip cut without
                # re-encoding keeps the frames from the keyframe before the cut). They are
                # decoded, never shown: not part of the video.
                continue
            frames += 1
            length = _ticks(fields[3])
            if at is None or timebase <= 0:
                continue
            times.append(at)
            # A frame listed without a duration (a last one may be) lasts one frame at the
            # average rate.
            ticks = length if length and length > 0 else 1 / (fps * timebase)
            end = max(end, at + ticks)
    if packets > most:  # the listing stopped there: what it has is not the whole video
        raise VideoTooLong(
            f"the video has more than {most} frames: longer than "
            f"{config.max_video_seconds:g} s at up to {MAX_FPS:g} fps"
        )
    if frames <= 0:
        raise VideoDecodeFailed("the video stream has no frames")
    if not times:
        raise VideoDecodeFailed("the video stream has no timestamps")
    # How far each frame would move if the frames were spaced evenly at ``fps``, as an
    # encode at that rate spaces them. Timestamps rounded to the timebase (512 or 513
    # ticks a frame) move them far less than the half-frame bound.
    shown = np.sort(np.frombuffer(times, dtype=np.int64))
    offsets = (shown - shown[0]) * float(timebase)
    drift = np.abs(offsets - np.arange(len(shown)) / fps).max()
    return _Track(
        frames=frames,
        start=float(shown[0] * timebase),
        end=float(end * timebase),
        constant_rate=bool(drift <= 0.5 / fps),
        # 0/1 (unknown) is square, as players take it.
        sample_aspect=sample_aspect if sample_aspect > 0 else Fraction(1),
    )


# -- swapping ---------------------------------------------------------------------------


def _is_cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping; a full queue never blocks shutdown."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _read_exact(stream: Any, buf: bytearray) -> int:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _reader(
    proc: subprocess.Popen[bytes],
    shape: tuple[int, int, int],
    batch_size: int,
    out: queue.Queue[Any],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    frame_bytes = shape[0] * shape[1] * shape[2]
    batch: list[np.ndarray] = []
    try:
        assert proc.stdout is not None
        while not stop.is_set():
            # A fresh bytearray per frame gives the swapper writable arrays it may keep.
            buf = bytearray(frame_bytes)
            got = _read_exact(proc.stdout, buf)
            if got < frame_bytes:
                break  # end of stream (a torn last frame is dropped)
            batch.append(np.frombuffer(buf, dtype=np.uint8).reshape(shape))
            if len(batch) >= batch_size:
                if not _put(out, batch, stop):
                    return
                batch = []
        if batch:
            _put(out, batch, stop)
    except BaseException as exc:  # reported to the calling thread
        errors.append(exc)
        stop.set()
    finally:
        _put(out, EOF_MARK, stop)


def _writer(
    proc: subprocess.Popen[bytes],
    inbox: queue.Queue[Any],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    try:
        assert proc.stdin is not None
        while True:
            try:
                item = inbox.get(timeout=POLL_S)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is EOF_MARK:
                return
            for frame in item:
                proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).data)
    except BaseException as exc:  # BrokenPipe when the encoder died: reported upstream
        errors.append(exc)
        stop.set()
    finally:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        # ValueError: ``_reap`` closed stdin at the same moment (a cancel).
        except (OSError, ValueError):
            pass


def _raise_first(errors: list[BaseException], details: dict[str, Any]) -> None:
    """Re-raise a worker thread's failure in the calling thread as a typed error."""
    if not errors:
        return
    exc = errors[0]
    if isinstance(exc, InferenceError | BrokenPipeError | ConnectionResetError):
        raise exc
    raise InferenceError(f"video pipeline failed: {exc}", **details) from exc


def _reap(proc: subprocess.Popen[bytes] | None) -> None:
    """Kill (if still running) and wait for a child, closing its pipes."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if pipe is not None:
                pipe.close()
        # ValueError: the feeding thread closed stdin at the same moment (a cancel).
        except (OSError, ValueError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
        log.error("ffmpeg child %s did not exit after SIGKILL", proc.pid)


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text("utf-8", "replace").strip()
    except OSError:
        return ""
    return text[-limit:]


def _frame_swappers(
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


def _restart_tracking(swapper: Any) -> None:
    """Tell a lane's swapper that its next batch does not follow its previous one."""
    reset = getattr(swapper, "reset", None)
    if callable(reset):
        reset()
        return
    tracker = getattr(swapper, "tracker", None)
    if tracker is not None and callable(getattr(tracker, "reset", None)):
        tracker.reset()


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


def _inline(fn: Callable[[], Any]) -> Future[Any]:
    """Run ``fn`` in the calling thread, packaged like an executor's future."""
    fut: Future[Any] = Future()
    try:
        fut.set_result(fn())
    except BaseException as exc:
        fut.set_exception(exc)
    return fut


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def sweep_stale_workdirs(temp_dir: Path | str | None, min_age_s: float = STALE_WORKDIR_S) -> int:
    """Remove work folders left by processes that died mid-video (SIGKILL, OOM, power).

    ``finally`` blocks clean up every normal exit; these are what no code got to run for.
    A folder is stale when the process named in it is gone and nothing in it changed for
    ``min_age_s`` (the age check protects live jobs of other containers sharing the dir).
    """
    root = Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir())
    removed = 0
    now = time.time()
    try:
        candidates = list(root.glob(f"{WORKDIR_PREFIX}*"))
    except OSError:
        return 0
    for folder in candidates:
        pid_part = folder.name[len(WORKDIR_PREFIX) :].split("-", 1)[0]
        if not pid_part.isdigit() or _pid_alive(int(pid_part)):
            continue
        try:
            newest = max([folder.stat().st_mtime, *(f.stat().st_mtime for f in folder.iterdir())])
        except OSError:
            continue
        if now - newest >= min_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d stale video work folder(s) from %s", removed, root)
    return removed


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
    swappers = _frame_swappers(
        engine_or_frame_swapper,
        source_bytes,
        faces,
        enhance,
        watermark,
        lanes if lanes is not None else processing_lanes(config),
    )

    native_rate = info.fps_rational or _exact_rate(info.fps)
    if keep_fps or info.fps <= reduced_fps + 0.01:
        out_rate, fps = native_rate, info.fps
    else:
        out_rate, fps = _exact_rate(reduced_fps), _rate_value(_exact_rate(reduced_fps))
    # Frames are encoded at a constant rate: a lower one, or a variable-rate video, is
    # resampled to it by the decoder (the picture then lasts as long as the sound).
    resample = out_rate != native_rate or not info.constant_rate
    total = max(1, math.ceil(info.duration * fps)) if resample else info.frame_count
    # yuv420p needs even sides: drop the odd last row/column rather than scale the image.
    width, height = info.width - info.width % 2, info.height - info.height % 2
    if width < 2 or height < 2:
        raise VideoDecodeFailed(f"video frames are too small ({info.width}x{info.height})")
    shape = (height, width, 3)
    with_audio = keep_audio and info.has_audio

    sweep_stale_workdirs(config.temp_dir)
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=config.temp_dir))
    tmp_out = workdir / "output.mp4"
    decoder: subprocess.Popen[bytes] | None = None
    encoder: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    frames_done = 0
    swapped_frames = 0
    logs: list[Any] = []
    executors: list[ThreadPoolExecutor] = []

    def details() -> dict[str, Any]:
        return {"frames_done": frames_done, "seconds_done": frames_done / fps}

    try:
        filters = []
        if resample:
            filters.append(f"fps={out_rate}")
        if (width, height) != (info.width, info.height):
            filters.append(f"crop={width}:{height}:0:0")
        decode_cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            *_input_args(input_path),
            "-map",
            f"0:{info.video_stream}",
            "-an",
            "-sn",
            "-dn",
            *(["-vf", ",".join(filters)] if filters else []),
            # One output frame per frame the filters give: the probe's count, or the
            # resampled one.
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "pipe:1",
        ]
        audio_input: list[str] = []
        audio_args: list[str] = ["-an"]
        if with_audio:
            # The soundtrack is read from the video's first frame for the video's length
            # (the length billed): sound from before it would play under the wrong picture,
            # and a longer one would play on over a frozen last frame, or make a 1 s swap an
            # hour-long file. Sound that starts after the first frame keeps its delay.
            audio_input = [
                "-ss",
                f"{info.start:.6f}",
                "-t",
                f"{info.duration:.6f}",
                *_input_args(input_path),
            ]
            audio_codec = (info.audio_codec or "").lower()
            copy = audio_codec in MP4_AUDIO_COPY
            reencode = ["-c:a", "aac", "-b:a", "160k"]
            if info.audio_layout not in AAC_LAYOUTS:
                reencode += ["-ac", "2"]  # e.g. 16-channel PCM, which AAC cannot carry
            audio_args = ["-map", "1:a:0", *(["-c:a", "copy"] if copy else reencode)]
        encode_cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-video_size",
            f"{width}x{height}",
            "-framerate",
            out_rate,
            "-i",
            "pipe:0",
            *audio_input,
            "-map",
            "0:v:0",
            *audio_args,
            # Raw frames carry no pixel shape: an anamorphic video is told its own again.
            "-vf",
            f"setsar={info.sample_aspect}",
            "-c:v",
            "libx264",
            "-preset",
            config.video_preset,
            "-crf",
            str(config.video_crf),
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            "-metadata",
            f"comment={config.metadata_tag}",
            "-f",
            "mp4",
            str(tmp_out),
        ]
        decode_log = (workdir / "decode.log").open("wb")
        encode_log = (workdir / "encode.log").open("wb")
        logs += [decode_log, encode_log]
        # stderr goes to files: an undrained stderr pipe can stall ffmpeg.
        decoder = subprocess.Popen(
            decode_cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=decode_log,
            bufsize=1 << 20,
        )
        encoder = subprocess.Popen(
            encode_cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=encode_log,
            bufsize=1 << 20,
        )
        # Bound a batch's memory too: a few 4K frames weigh as much as dozens of 720p ones.
        frame_bytes = width * height * 3
        batch_size = max(1, min(int(config.video_batch_frames), BATCH_BYTES // frame_bytes))
        decoded: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        to_encode: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        threads = [
            threading.Thread(
                target=_reader,
                args=(decoder, shape, batch_size, decoded, stop, errors),
                name="swapmeter-video-reader",
                daemon=True,
            ),
            threading.Thread(
                target=_writer,
                args=(encoder, to_encode, stop, errors),
                name="swapmeter-video-writer",
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        # One single-thread executor per lane keeps each FrameSwapper on one thread and
        # its batches in order; with one lane the calling thread does the work itself.
        if len(swappers) > 1:
            executors = [
                ThreadPoolExecutor(1, thread_name_prefix=f"swapmeter-video-lane{i}")
                for i in range(len(swappers))
            ]

        processing = 0.0
        pending: deque[Future[Any]] = deque()
        batches_in = 0
        eof = False
        while True:
            if _is_cancelled(cancel):
                raise Cancelled(
                    f"cancelled after {frames_done} of {total} frames",
                    frames_done=frames_done,
                    seconds_done=frames_done / fps,
                )
            if not eof and len(pending) < len(swappers):
                try:
                    batch = decoded.get(timeout=POLL_S)
                except queue.Empty:
                    if errors:
                        break
                    batch = None
                if batch is EOF_MARK:
                    eof = True
                elif batch is not None:
                    lane = batches_in % len(swappers)
                    restart = len(swappers) > 1 and batches_in >= len(swappers)
                    job = partial(_process_batch, swappers[lane], batch, restart)
                    pending.append(executors[lane].submit(job) if executors else _inline(job))
                    batches_in += 1
                    continue
            if not pending:
                if eof or errors:
                    break
                continue
            try:
                out_frames, swapped, seconds = pending[0].result(timeout=POLL_S)
            except FutureTimeout:
                continue
            except InferenceError as exc:
                exc.details.update(details())
                raise
            except Exception as exc:
                raise InferenceError(f"frame processing failed: {exc}", **details()) from exc
            pending.popleft()
            processing += seconds
            swapped_frames += swapped
            if not _put(to_encode, out_frames, stop):
                break  # the writer failed; reported below
            frames_done += len(out_frames)
            if progress is not None:
                progress(frames_done, max(total, frames_done))
        timings["process"] = processing

        _raise_first(errors, details())
        _put(to_encode, EOF_MARK, stop)
        for t in threads:
            t.join()
        _raise_first(errors, details())
        decode_rc = decoder.wait()
        encode_rc = encoder.wait()
        if decode_rc != 0 or frames_done == 0:
            raise VideoDecodeFailed(
                "the video could not be decoded"
                + (f": {_tail(workdir / 'decode.log')}" if decode_rc else " (no frames)"),
                **details(),
            )
        if encode_rc != 0:
            raise InferenceError(
                f"video encoding failed: {_tail(workdir / 'encode.log')}", **details()
            )
        if progress is not None and frames_done != total:
            progress(frames_done, frames_done)  # the probe's count was off: end at 100 %
        output_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp_out), str(output_path))
        timings["total"] = time.perf_counter() - started
        return VideoResult(
            frames=frames_done,
            fps=fps,
            duration=frames_done / fps,
            width=width,
            height=height,
            has_audio=with_audio,
            faces_swapped_frames=swapped_frames,
            seconds_done=frames_done / fps,
            complete=frames_done >= (total - 1 if resample else total),
            output_path=output_path,
            timings=timings,
        )
    except (BrokenPipeError, ConnectionResetError) as exc:
        reason = _tail(workdir / "encode.log") or str(exc)
        raise InferenceError(f"video encoding failed: {reason}", **details()) from exc
    except InferenceError as exc:
        for key, value in details().items():
            exc.details.setdefault(key, value)
        if isinstance(exc, Cancelled):
            exc.frames_done = frames_done
        raise
    finally:
        stop.set()
        for executor in executors:
            # A lane still busy finishes its batch (cancel waits at most that long).
            executor.shutdown(wait=True, cancel_futures=True)
        _reap(decoder)
        _reap(encoder)
        for t in threads:
            t.join(timeout=10)
        for fh in logs:
            fh.close()
        shutil.rmtree(workdir, ignore_errors=True)
