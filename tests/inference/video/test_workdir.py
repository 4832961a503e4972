"""Work folders left by processes that died mid-video are swept."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from inference.video import sweep_stale_workdirs


def test_work_folders_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"swapmeter-video-{dead.pid}-abc"
    fresh = tmp_path / f"swapmeter-video-{dead.pid}-def"
    mine = tmp_path / f"swapmeter-video-{os.getpid()}-ghi"
    for folder in (stale, fresh, mine):
        folder.mkdir()
        (folder / "output.mp4").write_bytes(b"partial")
    old = time.time() - 3600
    for path in (stale, stale / "output.mp4", mine, mine / "output.mp4"):
        os.utime(path, (old, old))

    assert sweep_stale_workdirs(tmp_path) == 1
    assert not stale.exists()
    assert fresh.exists()  # recently written: maybe a live job of another container
    assert mine.exists()  # this process is alive
