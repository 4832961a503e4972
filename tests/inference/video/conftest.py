"""Fixtures of the video tests: a detector, a 2 s clip, and a config with its own work dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.config import EngineConfig
from inference.faces import YuNetDetector
from inference.runtime import get_session
from tests.inference.video.clips import MODELS_DIR, make_video


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    config = EngineConfig()
    return YuNetDetector(get_session(MODELS_DIR / "face_detection_yunet_2023mar.onnx", config))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clips") / "pan.mp4", seconds=2.0)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def config(workdir: Path) -> EngineConfig:
    return EngineConfig(models_dir=MODELS_DIR, temp_dir=workdir, video_preset="ultrafast")
