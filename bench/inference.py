"""Inference benchmark: per-stage latency of a 720p image swap and the fps of a video swap.

Run as ``.venv/bin/python bench/inference.py``. The video's floor is a plain decode +
encode of the same clip through the same rawvideo pipe and encoder settings, so the ratio
shows what face swapping costs on top of the unavoidable video work.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.config import EngineConfig  # noqa: E402
from inference.video import ffmpeg_exe, probe, processing_lanes, swap_video  # noqa: E402

SHARED = REPO.parent / "shared"
FACES = SHARED / "media" / "faces"
MODELS_DIR = Path(os.environ.get("SWAPMETER_MODELS_DIR", SHARED / "models"))
IMAGE_STAGES = ("decode", "detect", "swap", "blend", "encode")


def cpu_seconds() -> float:
    """CPU time of this process's threads plus its reaped children (the ffmpeg processes)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:  # pragma: no cover - not Linux
        return "?"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_clip(out: Path, seconds: float, fps: int, size: tuple[int, int]) -> Path:
    """A slow zoom into the face of obama-720p.jpg with a sine-tone soundtrack."""
    w, h = size
    frames = int(seconds * fps)
    # Zoom about the face (x about 52 %, y about 23 % of the still) so it stays in view.
    zoom = (
        f"zoompan=z='1+0.25*on/{frames}':x='(iw-iw/zoom)*0.52':y='(ih-ih/zoom)*0.23'"
        f":d=1:s={w}x{h}:fps={fps},format=yuv420p"
    )
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-loop", "1", "-framerate", str(fps), "-t", str(seconds),
        "-i", str(FACES / "obama-720p.jpg"),
        "-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440:sample_rate=48000",
        "-vf", zoom, "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
        "-c:a", "aac", "-b:a", "128k", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return out


class Passthrough:
    """The floor's frame stage: hands frames straight on."""

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return frames


def bench_image(config: EngineConfig, runs: int, warmup: int) -> dict[str, float]:
    from inference.engine import Engine

    engine = Engine(config)
    source = (FACES / "obama.jpg").read_bytes()
    target_img = cv2.imread(str(FACES / "biden.jpg"))
    assert target_img is not None, "shared/media/faces/biden.jpg is missing"
    # biden.jpg is a tall portrait: take a 16:9 band around the face, scaled to 1280x720.
    h = target_img.shape[1] * 9 // 16
    top = 80
    target_img = cv2.resize(target_img[top : top + h], (1280, 720), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", target_img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    target = buf.tobytes()

    stages: dict[str, list[float]] = defaultdict(list)
    walls: list[float] = []
    faces = 0
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        result = engine.swap_image(source, target, faces="largest", output_format="jpg")
        wall = time.perf_counter() - t0
        if i < warmup:
            continue
        walls.append(wall)
        faces = result.faces_swapped
        for key, value in (result.timings or {}).items():
            stages[key].append(float(value))
    medians = {k: statistics.median(v) * 1000 for k, v in stages.items()}
    medians["wall"] = statistics.median(walls) * 1000
    print(f"\n720p image swap (obama.jpg onto a 1280x720 target), {runs} runs after {warmup}:")
    for key in (*IMAGE_STAGES, *(k for k in medians if k not in IMAGE_STAGES and k != "wall")):
        if key in medians:
            print(f"  {key:<12} {medians[key]:8.1f} ms")
    print(f"  {'total':<12} {medians['wall']:8.1f} ms (wall, median)   faces swapped: {faces}")
    print(f"  target: <= 150 ms -> {'met' if medians['wall'] <= 150 else 'MISSED'}")
    return medians


def bench_video(config: EngineConfig, seconds: float, workdir: Path) -> dict[str, float]:
    from inference.engine import Engine

    clip = make_clip(workdir / "clip.mp4", seconds, 30, (1280, 720))
    info = probe(clip, config)
    print(
        f"\nvideo: {info.width}x{info.height} {info.fps:g} fps, {info.frame_count} frames, "
        f"{info.duration:.2f} s, audio={info.has_audio}"
    )

    load_before = load()
    t0, c0 = time.perf_counter(), cpu_seconds()
    floor = swap_video(Passthrough(), None, clip, workdir / "floor.mp4", config=config)
    floor_wall, floor_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    floor_fps = floor.frames / floor_wall

    engine = Engine(config)
    source = (FACES / "biden.jpg").read_bytes()
    engine.swap_image(source, (FACES / "obama-720p.jpg").read_bytes())  # load the models
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = swap_video(engine, source, clip, workdir / "swapped.mp4", config=config)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    fps = result.frames / wall

    print(f"  floor (decode + encode only): {floor_wall:6.2f} s  {floor_fps:6.1f} fps")
    print(
        f"  face swap:                    {wall:6.2f} s  {fps:6.1f} fps   "
        f"(frames with a face swapped: {result.faces_swapped_frames}/{result.frames}; "
        f"in-thread processing {result.timings.get('process', 0):.2f} s)"
    )
    print(
        f"  CPU time: floor {floor_cpu:.2f} s, swap {cpu:.2f} s "
        f"({1000 * (cpu - floor_cpu) / result.frames:.1f} ms of CPU per frame for the swap); "
        f"on {cores()} idle cores the swap needs at least {cpu / cores():.2f} s "
        f"(load average before: {load_before}, after: {load()})"
    )
    ratio = fps / floor_fps
    realtime = info.duration / wall
    print(f"  swap fps / floor fps:         {ratio:6.2f}   (target >= 0.40)")
    print(f"  video seconds / wall seconds: {realtime:6.2f}   (target: 10 s video in <= 10 s)")
    verdict = "met" if ratio >= 0.4 and wall <= seconds else "MISSED"
    print(f"  video targets: {verdict}")
    return {"floor_fps": floor_fps, "fps": fps, "ratio": ratio, "realtime": realtime}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the test video")
    parser.add_argument("--skip-image", action="store_true")
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--preset", default=None, help="x264 preset (default: the config's)")
    parser.add_argument("--batch", type=int, default=None, help="frames per batch")
    parser.add_argument("--intra-threads", type=int, default=None, help="ORT intra-op threads")
    parser.add_argument("--lanes", type=int, default=None, help="video processing lanes")
    parser.add_argument("--detector", default=None, help="yunet, yunet_dynamic or scrfd_2.5g")
    parser.add_argument("--detector-input-size", type=int, default=None)
    args = parser.parse_args()

    overrides: dict[str, object] = {"models_dir": MODELS_DIR}
    if args.preset:
        overrides["video_preset"] = args.preset
    if args.batch:
        overrides["video_batch_frames"] = args.batch
    if args.intra_threads is not None:
        overrides["intra_op_threads"] = args.intra_threads
    if args.lanes:
        overrides["video_workers"] = args.lanes
    if args.detector:
        overrides["detector"] = args.detector
    if args.detector_input_size:
        overrides["detector_input_size"] = args.detector_input_size
    config = EngineConfig(**overrides)  # type: ignore[arg-type]

    print(
        f"machine: {cores()} cores available ({os.cpu_count()} on the host), "
        f"OpenCV threads {cv2.getNumThreads()}, ORT intra-op threads "
        f"{config.intra_op_threads or 'auto'}, x264 preset {config.video_preset}, "
        f"batch {config.video_batch_frames} frames, lanes {processing_lanes(config)}, "
        f"swapper {config.swapper}, detector {config.detector} "
        f"(input {getattr(config, 'detector_input_size', '-')})"
    )
    if not args.skip_image:
        bench_image(config, args.runs, args.warmup)
    if not args.skip_video:
        with tempfile.TemporaryDirectory(prefix="swapmeter-bench-") as tmp:
            bench_video(config, args.seconds, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
