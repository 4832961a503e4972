"""Work folders of a video swap: named for their process, swept when it died mid-video."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

WORKDIR_PREFIX = "swapmeter-video-"
STALE_WORKDIR_S = 600.0


def make_workdir(temp_dir: Path | None) -> Path:
    """A fresh folder for one swap's output and logs, named for this process."""
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=temp_dir))


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
