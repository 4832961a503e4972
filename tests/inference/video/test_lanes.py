"""Processing lanes: batches swapped in parallel come out in order, tracking restarted."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np

from inference.config import EngineConfig
from inference.video import ffmpeg_exe, swap_video
from tests.inference.video.clips import read_frames


class _LaneEngine:
    """Engine stand-in: hands out identity FrameSwappers and records how they were used."""

    def __init__(self) -> None:
        self.swappers: list[_LaneSwapper] = []

    def frame_swapper(self, source: bytes, **kwargs: object) -> _LaneSwapper:
        swapper = _LaneSwapper()
        self.swappers.append(swapper)
        return swapper


class _LaneSwapper:
    def __init__(self) -> None:
        self.resets = 0
        self.threads: set[str] = set()
        self.last_faces_swapped: list[int] = []

    def reset(self) -> None:
        self.resets += 1

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        self.threads.add(threading.current_thread().name)
        self.last_faces_swapped = [1] * len(frames)
        return frames


def test_parallel_lanes_keep_frame_order_and_restart_tracking(
    tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    src = tmp_path / "counter.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30"]
        + ["-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(src)],
        check=True,
    )
    engine = _LaneEngine()
    out = tmp_path / "out.mp4"
    result = swap_video(engine, b"face", src, out, config=config, lanes=3)
    assert len(engine.swappers) == 3
    assert result.frames == 60 and result.faces_swapped_frames == 60
    # 60 frames in batches of 8 = 8 batches over 3 lanes: every batch after a lane's
    # first restarts its tracking, and each lane stays on one thread.
    assert sum(s.resets for s in engine.swappers) == 8 - 3
    assert all(len(s.threads) == 1 for s in engine.swappers)
    before, after = read_frames(src).astype(int), read_frames(out).astype(int)
    for i in range(60):
        same = np.abs(after[i] - before[i]).mean()
        others = [np.abs(after[i] - before[j]).mean() for j in (i - 1, i + 1) if 0 <= j < 60]
        assert same < min(others), f"frame {i} is out of order"
