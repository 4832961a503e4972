"""The package surface: public names resolve, and light imports stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import inference


def test_every_public_name_resolves() -> None:
    for name in inference.__all__:
        assert getattr(inference, name) is not None, name
    from inference import Engine, ImageResult, NoFaceDetected

    assert NoFaceDetected.code == "NoFaceDetected"
    assert {
        "data",
        "mime",
        "width",
        "height",
        "faces_swapped",
        "enhance_applied",
        "timings",
    } <= set(ImageResult.__dataclass_fields__)
    assert callable(Engine.swap_image) and callable(Engine.frame_swapper)


def test_importing_config_and_errors_does_not_load_opencv_or_onnxruntime() -> None:
    code = (
        "import sys, inference.config, inference.errors; "
        "print(sorted(m for m in ('cv2', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"
