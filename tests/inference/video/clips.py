"""Test videos and what the video tests read back from them.

Clips are made here from the stills in shared/media/faces: a pan over obama-720p.jpg (the
face stays in view) with a sine-tone audio track, small and short so the suite stays fast
on two cores; and flash-and-beep clips whose picture and sound mark the same instant.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np

from inference.faces import YuNetDetector
from inference.video import ffmpeg_exe, probe

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
MODELS_DIR = Path(os.environ.get("SWAPMETER_MODELS_DIR", SHARED / "models"))
FACES_DIR = SHARED / "media" / "faces"
STILL = FACES_DIR / "obama-720p.jpg"
FACE_BOX_720P = (581, 59, 747, 271)  # the face in obama-720p.jpg (x1, y1, x2, y2)
PAN_FROM, PAN_BY = 344, 160  # crop window x at t=0 and how far it pans over the clip


def make_video(
    out: Path,
    *,
    seconds: float = 2.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 180),
    audio: bool = True,
    pix_fmt: str = "yuv420p",
) -> Path:
    """A pan over obama-720p.jpg: 640x360 window moving right, scaled to ``size``."""
    w, h = size
    vf = (
        f"crop=640:360:x='{PAN_FROM}+{PAN_BY}*t/{seconds}':y=0,"
        f"scale={w}:{h},setsar=1,format={pix_fmt}"
    )
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-loop", "1", "-framerate", str(fps), "-t", str(seconds), "-i", str(STILL)]
    if audio:
        cmd += ["-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-vf", vf, "-c:v", "libx264", "-preset", "ultrafast", "-g", str(fps)]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "64k"]
    cmd += [str(out)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return out


def read_frames(path: Path) -> np.ndarray:
    info = probe(path)
    raw = subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def container_comment(path: Path) -> str | None:
    text = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    ).stderr
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "comment":
            return value.strip()
    return None


def container_seconds(path: Path) -> float:
    """The whole file's length as ffmpeg reports it (its longest stream, audio included)."""
    run = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    found = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", run.stderr)
    assert found, run.stderr
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def ffmpeg_children() -> list[int]:
    """Live child processes of this test process (ffmpeg must never outlive a call)."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        # Only ffmpeg: on a machine without servers the test session's own embedded
        # PostgreSQL and Redis are children of this process too.
        if fields[1] == me and fields[0] != "Z" and "ffmpeg" in command:
            found.append(int(entry.name))
    return found


class FaceBoxPainter:
    """A FrameSwapper stand-in: paints detected face boxes solid green."""

    def __init__(self, detector: YuNetDetector, fail_after: int | None = None) -> None:
        self.detector = detector
        self.faces_swapped_frames = 0
        self.seen = 0
        self.fail_after = fail_after

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for frame in frames:
            self.seen += 1
            if self.fail_after is not None and self.seen > self.fail_after:
                raise RuntimeError("model crashed")
            frame = frame.copy()
            faces = self.detector.detect(frame)
            for face in faces:
                x1, y1, x2, y2 = face.box.astype(int)
                cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 255, 0), -1)
            self.faces_swapped_frames += bool(faces)
            out.append(frame)
        return out


def face_region(frame_index: int, fps: float, seconds: float, scale: float = 0.5) -> tuple:
    """Where the face is in frame ``frame_index`` of a make_video clip (y and x slices)."""
    x0 = PAN_FROM + PAN_BY * (frame_index / fps) / seconds
    x1, y1, x2, y2 = FACE_BOX_720P
    return (
        slice(int(y1 * scale) + 4, int(y2 * scale) - 4),
        slice(int((x1 - x0) * scale) + 6, int((x2 - x0) * scale) - 6),
    )


class Identity:
    """A FrameSwapper stand-in that hands every frame back as it came."""

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return frames


def clip_with_a_12s_soundtrack(tmp_path: Path) -> Path:
    """The 2 s, 60-frame clip with a 12 s sine soundtrack: the container says 12 s."""
    clip = make_video(tmp_path / "clip.mp4", seconds=2.0, audio=False)
    long_audio = tmp_path / "long-audio.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), "-f", "lavfi", "-t", "12",
         "-i", "sine=frequency=440", "-c:v", "copy", "-c:a", "aac", str(long_audio)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return long_audio


def flash_and_beep(out: Path, *, seconds: float, at: float, select: str = "1") -> Path:
    """A gray 30 fps clip whose top-left corner flashes white while a 1 kHz beep sounds, both
    from ``at`` to ``at + 0.2`` s. ``select`` keeps only some frames (a variable rate), which
    are then stamped with their own times; no B-frames, as phones record."""
    flash = f"drawbox=x=0:y=0:w=32:h=32:color=white:t=fill:enable='between(t,{at},{at + 0.2})'"
    beep = f"aevalsrc='if(between(t,{at},{at + 0.2}),sin(2*PI*1000*t),0)':s=44100:d={seconds}"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
         f"color=c=gray:s=160x90:r=30:d={seconds}", "-f", "lavfi", "-i", beep,
         "-vf", f"format=yuv420p,{flash},select='{select}'", "-fps_mode", "vfr",
         "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-c:a", "aac", str(out)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return out


def flash_seconds(path: Path) -> float:
    """When the top-left corner first shows white: the first frame's time, as stamped."""
    run = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0",
         "-vf", "crop=16:16:8:8,showinfo", "-f", "null", "-"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    for line in run.stderr.splitlines():
        frame = re.search(r"pts_time:\s*(-?[\d.]+).*?mean:\[(\d+)", line)
        if frame and int(frame.group(2)) > 200:
            return float(frame.group(1))
    raise AssertionError(f"{path.name} never flashes")


def beep_seconds(path: Path) -> float:
    """When the sound first gets loud, from the file's start (a delayed track included)."""
    pcm = subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
         "-af", "aresample=async=1:first_pts=0", "-ac", "1", "-ar", "8000", "-f", "f32le", "-"],
        capture_output=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, np.float32)) > 0.3)
    assert loud.size, f"{path.name} never beeps"
    return loud[0] / 8000
