"""ffmpeg command lines and children: how an upload is opened, decoded and encoded.

Every argument list the pipeline and the probe hand to ffmpeg is built here, with the
audio handling (copy or re-encode, trimmed to the video) and the exact frame rates ffmpeg
expects; so is running a child, reaping it and reading its log.
"""

from __future__ import annotations

import logging
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from inference.config import EngineConfig
from inference.errors import VideoDecodeFailed

if TYPE_CHECKING:
    from inference.video.probe import VideoInfo

log = logging.getLogger(__name__)

# Demuxers a user upload may be opened with: the containers ``media.sniff`` admits (ISO
# BMFF / QuickTime, Matroska / WebM, AVI), nothing else. Playlist-like formats (hls,
# concat, image2 patterns) would make ffmpeg open other files or URLs; raw elementary
# streams (h264, hevc, ...) carry no timestamps, so a file with a container's magic in
# front of one would be measured as lasting a frame and billed as such, however long.
ALLOWED_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi"
# Audio codecs MP4 carries as is; anything else is re-encoded to AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
# Channel layouts the AAC encoder takes as they are; other audio is mixed down to stereo.
AAC_LAYOUTS = frozenset(
    {"mono", "stereo", "3.0", "4.0", "5.0", "5.0(side)", "5.1", "5.1(side)", "7.1"}
)
PIPE_BUFFER = 1 << 20
# How the commands start: no banner, never reading the terminal, and (but for the header,
# which is read from the log) logging errors only.
_QUIET = ["-hide_banner", "-nostdin"]
_ERRORS_ONLY = [*_QUIET, "-loglevel", "error"]


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def input_args(path: Path) -> list[str]:
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


def header_command(path: Path) -> list[str]:
    """Open the file and print its streams (the command fails: it names no output)."""
    return [ffmpeg_exe(), *_QUIET, *input_args(path)]


def packet_listing_command(path: Path, stream: int, most_frames: int) -> list[str]:
    """Copy one stream's packets, at most ``most_frames``, to the framecrc listing."""
    return [
        ffmpeg_exe(),
        *_ERRORS_ONLY,
        *input_args(path),
        "-map",
        f"0:{stream}",
        "-c",
        "copy",
        "-frames:v",
        str(most_frames),
        "-f",
        "framecrc",
        "-",
    ]


# -- frame rates ------------------------------------------------------------------------


def exact_rate(fps: float) -> str:
    """ffmpeg prints 29.97 for 30000/1001: map such rates back to the exact fraction."""
    for base in (24, 30, 48, 60, 120):
        ntsc = base * 1000 / 1001
        if abs(fps - ntsc) < 0.006:
            return f"{base * 1000}/1001"
    if abs(fps - round(fps)) < 1e-3:
        return str(int(round(fps)))
    return f"{fps:.6f}"


def rate_value(rational: str) -> float:
    if "/" in rational:
        num, den = rational.split("/")
        return float(num) / float(den)
    return float(rational)


# -- the swap's decoder and encoder -----------------------------------------------------


@dataclass(frozen=True)
class OutputPlan:
    """What a swap writes for a probed video: its rate, frame count, size and sound."""

    rate: str  # exact, for ffmpeg: "30000/1001"
    fps: float
    # Frames are encoded at a constant rate: a lower one, or a variable-rate video, is
    # resampled to it by the decoder (the picture then lasts as long as the sound).
    resample: bool
    total: int  # frames expected out
    width: int
    height: int
    with_audio: bool

    @classmethod
    def of(
        cls, info: VideoInfo, *, keep_fps: bool, keep_audio: bool, reduced_fps: float
    ) -> OutputPlan:
        native_rate = info.fps_rational or exact_rate(info.fps)
        if keep_fps or info.fps <= reduced_fps + 0.01:
            rate, fps = native_rate, info.fps
        else:
            rate, fps = exact_rate(reduced_fps), rate_value(exact_rate(reduced_fps))
        resample = rate != native_rate or not info.constant_rate
        # yuv420p needs even sides: drop the odd last row/column rather than scale the image.
        width, height = info.width - info.width % 2, info.height - info.height % 2
        if width < 2 or height < 2:
            raise VideoDecodeFailed(f"video frames are too small ({info.width}x{info.height})")
        return cls(
            rate=rate,
            fps=fps,
            resample=resample,
            total=max(1, math.ceil(info.duration * fps)) if resample else info.frame_count,
            width=width,
            height=height,
            with_audio=keep_audio and info.has_audio,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    def complete(self, frames: int) -> bool:
        """Every frame came out (resampled: to within the frame rounding the rate leaves)."""
        return frames >= (self.total - 1 if self.resample else self.total)


def decoder_command(path: Path, info: VideoInfo, plan: OutputPlan) -> list[str]:
    """Decode the video stream to raw BGR frames on stdout, resampled and cropped to plan."""
    filters = []
    if plan.resample:
        filters.append(f"fps={plan.rate}")
    if (plan.width, plan.height) != (info.width, info.height):
        filters.append(f"crop={plan.width}:{plan.height}:0:0")
    return [
        ffmpeg_exe(),
        *_ERRORS_ONLY,
        *input_args(path),
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


def audio_args(path: Path, info: VideoInfo) -> tuple[list[str], list[str]]:
    """The encoder's second input (the upload's soundtrack) and how it is mapped and coded.

    The soundtrack is read from the video's first frame for the video's length (the length
    billed): sound from before it would play under the wrong picture, and a longer one
    would play on over a frozen last frame, or make a 1 s swap an hour-long file. Sound
    that starts after the first frame keeps its delay.
    """
    audio_input = ["-ss", f"{info.start:.6f}", "-t", f"{info.duration:.6f}", *input_args(path)]
    if (info.audio_codec or "").lower() in MP4_AUDIO_COPY:
        return audio_input, ["-map", "1:a:0", "-c:a", "copy"]
    reencode = ["-c:a", "aac", "-b:a", "160k"]
    if info.audio_layout not in AAC_LAYOUTS:
        reencode += ["-ac", "2"]  # e.g. 16-channel PCM, which AAC cannot carry
    return audio_input, ["-map", "1:a:0", *reencode]


def encoder_command(
    path: Path, info: VideoInfo, plan: OutputPlan, config: EngineConfig, out: Path
) -> list[str]:
    """Encode raw BGR frames from stdin (and the upload's sound, if kept) to an H.264 MP4."""
    audio_input, audio = audio_args(path, info) if plan.with_audio else ([], ["-an"])
    return [
        ffmpeg_exe(),
        *_ERRORS_ONLY,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-video_size",
        f"{plan.width}x{plan.height}",
        "-framerate",
        plan.rate,
        "-i",
        "pipe:0",
        *audio_input,
        "-map",
        "0:v:0",
        *audio,
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
        str(out),
    ]


# -- children ---------------------------------------------------------------------------


def run(
    cmd: list[str], timeout: float, stdout: IO[bytes] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a probing command to its end; a timeout is a video that cannot be read."""
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


def spawn(cmd: list[str], *, stdin: int, stdout: int, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    # stderr goes to a file: an undrained stderr pipe can stall ffmpeg.
    return subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, bufsize=PIPE_BUFFER)


def reap(proc: subprocess.Popen[bytes] | None) -> None:
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


def tail(path: Path, limit: int = 400) -> str:
    """The end of a child's log, for an error message."""
    try:
        text = path.read_text("utf-8", "replace").strip()
    except OSError:
        return ""
    return text[-limit:]
