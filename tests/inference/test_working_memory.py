"""What one image costs a worker: within ``WORKING_BYTES_PER_PIXEL`` times its pixels,
whatever its bit depth and channels, measured as the peak resident memory of a process
that runs the engine as a worker does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.memory import WORKING_BYTES_PER_PIXEL
from tests.inference.conftest import FACES_DIR, MODELS_DIR

# Side of the square target, at the pixel limit the engine is given: big enough that the
# per-pixel cost dwarfs what does not grow with the image, small enough to run in seconds.
SIDE = 3000
MB = 1 << 20

# A worker-like process: the engine with the worker's malloc settings, warmed by one
# swap (sessions and arenas loaded), then one swap of the target. VmHWM, unlike
# ru_maxrss, starts again at exec: the parent's peak does not count.
WORKER = """
import json, sys
from inference.config import EngineConfig
from inference.engine import Engine
from inference.memory import keep_freed_memory

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

keep_freed_memory()
faces, models, target, pixels = sys.argv[1:5]
config = EngineConfig(models_dir=models, max_image_pixels=int(pixels))
engine = Engine(config)
source = open(faces + "/obama.jpg", "rb").read()
engine.swap_image(source, open(faces + "/biden.jpg", "rb").read())
before = status("VmRSS:")
result = engine.swap_image(source, open(target, "rb").read(), output_format="png")
print(json.dumps({"grew": status("VmHWM:") - before, "faces": result.faces_swapped}))
"""


def sixteen_bit_png(kind: str, path: Path) -> Path:
    """A photo with a face, blown up to SIDE x SIDE, as a 16-bit PNG."""
    photo = cv2.resize(cv2.imread(str(FACES_DIR / "biden.jpg")), (SIDE, SIDE))
    if kind == "grey":
        pixels = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    else:  # RGBA: the most channels, and an alpha the decoder keeps aside
        alpha = np.full((SIDE, SIDE, 1), 255, np.uint8)
        alpha[:64, :64] = 0
        pixels = np.concatenate([photo, alpha], axis=2).astype(np.uint16) * 257
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return path


@pytest.mark.parametrize("kind", ["grey", "rgba"])
def test_a_16_bit_png_at_the_pixel_limit_stays_within_the_stated_bound(
    kind: str, tmp_path: Path
) -> None:
    target = sixteen_bit_png(kind, tmp_path / f"{kind}16.png")
    pixels = SIDE * SIDE
    run = subprocess.run(
        [sys.executable, "-c", WORKER, str(FACES_DIR), str(MODELS_DIR), str(target), str(pixels)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["faces"] == 1  # the whole path ran: decode, detect, swap, encode
    bound = WORKING_BYTES_PER_PIXEL * pixels
    assert measured["grew"] <= bound, (
        f"a {SIDE}x{SIDE} 16-bit {kind} PNG grew the worker by {measured['grew'] / MB:.0f} MB; "
        f"the stated bound is {bound / MB:.0f} MB"
    )
