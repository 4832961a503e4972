"""Probing an upload: its streams, frame size and rate, and its length from its packets.

The length (what a swap processes and what is billed) is measured from a listing of the
video stream's packets, capped at the most frames an accepted video can have, never taken
from the container's header; frames an MP4 edit list hides are not counted.
"""

from __future__ import annotations

import math
import re
import tempfile
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from inference.config import EngineConfig
from inference.errors import ImagePixelExceed, VideoDecodeFailed, VideoTooLong
from inference.video.ffmpeg import (
    exact_rate,
    header_command,
    packet_listing_command,
    rate_value,
    run,
)

MIN_FPS, MAX_FPS = 0.5, 480.0  # frame rates a video may have


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

    streams = _read_streams(path)
    width, height = _frame_size(streams, config)
    fps_rational = _frame_rate(streams.video)
    fps = rate_value(fps_rational)
    # The length is the video stream's own, measured from its packets (what a swap
    # processes and what is billed), never the container's header: that one may cover a
    # longer audio track, or claim anything at all (a file cut short, a header edited to
    # say 1 s for a 30 s video).
    track = _measure_track(path, streams.video_index, fps, config)
    duration = track.end - track.start
    if duration > config.max_video_seconds:
        raise VideoTooLong(
            f"the video lasts {duration:.1f} s; the limit is {config.max_video_seconds:g} s",
            duration=duration,
        )
    sar = track.sample_aspect
    if streams.rotation in (90, 270):
        sar = 1 / sar  # the decoder turns the picture, and with it each pixel
    return VideoInfo(
        duration=duration,
        fps=fps,
        frame_count=track.frames,
        width=width,
        height=height,
        has_audio=streams.audio_codec is not None,
        codec=streams.video.split()[0].strip(","),
        audio_codec=streams.audio_codec,
        audio_layout=streams.audio_layout,
        rotation=streams.rotation,
        fps_rational=fps_rational,
        video_stream=streams.video_index,
        start=track.start,
        constant_rate=track.constant_rate,
        sample_aspect=str(sar),
    )


# -- the header: streams, size, rate ----------------------------------------------------

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


@dataclass(frozen=True)
class _Streams:
    video: str  # ffmpeg's description of the first video stream: "h264 (High), yuv420p, ..."
    video_index: int
    rotation: int
    audio_codec: str | None
    audio_layout: str | None


def _read_streams(path: Path) -> _Streams:
    """The first video stream (not a cover picture) and first audio stream ffmpeg lists."""
    header = run(header_command(path), timeout=60)
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
            rotation = _rotation(lines, i)
        elif kind == "Audio" and audio_codec is None:
            audio_codec = rest.split()[0].strip(",")
            fields = [f.strip() for f in rest.split(",")]
            audio_layout = fields[2] if len(fields) > 2 else None  # "stereo", "5.1(side)"
    if video_line is None:
        raise VideoDecodeFailed("the file has no video stream")
    return _Streams(video_line, video_index, rotation, audio_codec, audio_layout)


def _rotation(lines: list[str], stream_line: int) -> int:
    """The rotation in the side data of the stream listed at ``lines[stream_line]``.

    Side data is printed in the lines under the stream, after its metadata, which may run
    long (a Matroska file's tags): read to the block's end.
    """
    line = lines[stream_line]
    indent = len(line) - len(line.lstrip())
    rotation = 0
    for follow in lines[stream_line + 1 :]:
        if _STREAM.match(follow) or len(follow) - len(follow.lstrip()) <= indent:
            break
        r = _ROTATION.search(follow)
        if r:
            rotation = int(round(float(r.group(1)))) % 360
    return rotation


def _frame_size(streams: _Streams, config: EngineConfig) -> tuple[int, int]:
    """Width and height as decoded (turned by the rotation), within the configured limits."""
    size_match = _SIZE.search(streams.video)
    if not size_match:
        raise VideoDecodeFailed("the video stream has no frame size")
    width, height = int(size_match.group(1)), int(size_match.group(2))
    if streams.rotation in (90, 270):
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
    return width, height


def _frame_rate(video: str) -> str:
    """The stream's frame rate as ffmpeg's exact rational ("30000/1001")."""
    fps_match = _FPS.search(video) or _TBR.search(video)
    fps = float(fps_match.group(1)) * (1000 if fps_match.group(2) else 1) if fps_match else 0.0
    if not (MIN_FPS <= fps <= MAX_FPS):
        raise VideoDecodeFailed(f"the video has an unusable frame rate ({fps:g} fps)")
    return exact_rate(fps)


# -- the packets: frame count, times, pixel shape ---------------------------------------


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
    packets = _PacketListing(fps)
    with tempfile.TemporaryFile(dir=config.temp_dir) as listing:
        cmd = packet_listing_command(path, stream, most + 1)
        result = run(cmd, timeout=300, stdout=listing)
        if result.returncode != 0:
            err = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise VideoDecodeFailed(
                "the video stream could not be read" + (f" ({err[-1][:200]})" if err else "")
            )
        listing.seek(0)
        for raw in listing:
            packets.add(raw.decode("ascii", "replace"))
    if packets.count > most:  # the listing stopped there: what it has is not the whole video
        raise VideoTooLong(
            f"the video has more than {most} frames: longer than "
            f"{config.max_video_seconds:g} s at up to {MAX_FPS:g} fps"
        )
    return packets.track()


class _PacketListing:
    """A framecrc listing of one stream, read a line at a time."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.timebase = Fraction(0)
        self.sample_aspect = Fraction(0)
        self.count = 0  # packets listed
        self.frames = 0  # of them, frames that show
        self.end = -math.inf  # in timebase units
        self.times = array("q")  # each timed frame's pts, in timebase units

    def add(self, line: str) -> None:
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            if key == "tb 0":
                self.timebase = _fraction(value)
            elif key == "sar 0":
                self.sample_aspect = _fraction(value)
            return
        fields = line.split(",")
        if len(fields) < 4:
            return
        self.count += 1
        # AVI leaves the pts of some frames out: their dts is when they show.
        pts = _ticks(fields[2])
        at = pts if pts is not None else _ticks(fields[1])
        if at is not None and at < 0:
            # Before the file's start: frames an MP4 edit list hides (a clip cut without
            # re-encoding keeps the frames from the keyframe before the cut). They are
            # decoded, never shown: not part of the video.
            return
        self.frames += 1
        length = _ticks(fields[3])
        if at is None or self.timebase <= 0:
            return
        self.times.append(at)
        # A frame listed without a duration (a last one may be) lasts one frame at the
        # average rate.
        ticks = length if length and length > 0 else 1 / (self.fps * self.timebase)
        self.end = max(self.end, at + ticks)

    def track(self) -> _Track:
        if self.frames <= 0:
            raise VideoDecodeFailed("the video stream has no frames")
        if not self.times:
            raise VideoDecodeFailed("the video stream has no timestamps")
        # How far each frame would move if the frames were spaced evenly at ``fps``, as an
        # encode at that rate spaces them. Timestamps rounded to the timebase (512 or 513
        # ticks a frame) move them far less than the half-frame bound.
        shown = np.sort(np.frombuffer(self.times, dtype=np.int64))
        offsets = (shown - shown[0]) * float(self.timebase)
        drift = np.abs(offsets - np.arange(len(shown)) / self.fps).max()
        return _Track(
            frames=self.frames,
            start=float(shown[0] * self.timebase),
            end=float(self.end * self.timebase),
            constant_rate=bool(drift <= 0.5 / self.fps),
            # 0/1 (unknown) is square, as players take it.
            sample_aspect=self.sample_aspect if self.sample_aspect > 0 else Fraction(1),
        )
