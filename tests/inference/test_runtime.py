"""ONNX Runtime sessions: shared per model, provider fallback to CPU, settings applied."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inference import memory
from inference.config import EngineConfig
from inference.errors import ModelNotInstalled
from inference.runtime import clear_sessions, get_session, resolve_providers

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODELS_DIR = Path(os.environ.get("SWAPMETER_MODELS_DIR", SHARED / "models"))
YUNET = MODELS_DIR / "face_detection_yunet_2023mar.onnx"


@pytest.fixture(autouse=True)
def fresh_sessions() -> Iterator[None]:
    clear_sessions()
    yield
    clear_sessions()


def test_one_session_per_model_is_created_and_reused() -> None:
    config = EngineConfig()
    first = get_session(YUNET, config)
    assert get_session(str(YUNET), config) is first
    outputs = first.run(None, {"input": np.zeros((1, 3, 640, 640), np.float32)})
    assert len(outputs) == 12
    clear_sessions()
    assert get_session(YUNET, config) is not first


def test_concurrent_first_use_creates_a_single_session() -> None:
    config = EngineConfig()
    barrier = threading.Barrier(6)
    got: list[object] = []

    def worker() -> None:
        barrier.wait()
        got.append(get_session(YUNET, config))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(s is got[0] for s in got)


def test_asking_for_cuda_on_a_cpu_machine_runs_on_cpu_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inference.runtime")
    session = get_session(YUNET, EngineConfig(providers=("tensorrt", "cuda")))
    assert session.get_providers() == ["CPUExecutionProvider"]
    lines = [r.getMessage() for r in caplog.records if r.name == "inference.runtime"]
    assert len(lines) == 1
    assert "CPUExecutionProvider" in lines[0] and "cuda" in lines[0]


def test_provider_names_map_and_unknown_ones_fall_back_to_cpu() -> None:
    assert resolve_providers(("cpu",)) == ["CPUExecutionProvider"]
    assert resolve_providers(("cuda", "bogus")) == ["CPUExecutionProvider"]
    assert resolve_providers(()) == ["CPUExecutionProvider"]


def test_thread_counts_and_graph_optimisation_come_from_the_config() -> None:
    session = get_session(YUNET, EngineConfig(intra_op_threads=1, inter_op_threads=1))
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level.name == "ORT_ENABLE_ALL"
    # Idle pool threads must not busy-wait on cores that ffmpeg and other lanes need.
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_missing_model_file_raises_model_not_installed(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalled):
        get_session(tmp_path / "absent.onnx", EngineConfig())


def test_the_engine_process_keeps_its_freed_image_memory() -> None:
    """glibc takes the engine's malloc settings (values past its limits are refused, and
    images then decode at the slower, page-faulting pace), once per process."""
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True  # once: the second call applies nothing new
