"""ONNX Runtime sessions: one per model file per process, created lazily and shared.

Creating a session costs tens to hundreds of milliseconds and its memory, so every caller
asks ``get_session`` and gets the same object; ORT's ``run`` is safe to call from threads.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import onnxruntime as ort

from inference.config import EngineConfig
from inference.errors import ModelInvalid, ModelNotInstalled

log = logging.getLogger(__name__)

PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU = "CPUExecutionProvider"

# Process-wide cache, keyed by resolved path and the settings that shape a session, so a
# test that asks for other threads or providers does not get a stale session.
_SESSION_CACHE: dict[tuple[str, tuple[str, ...], int, int, bool], ort.InferenceSession] = {}
_SESSION_CACHE_LOCK = threading.Lock()


def resolve_providers(wanted: tuple[str, ...] | list[str]) -> list[str]:
    """Map config names ("cuda", ...) to ORT provider names this build actually has.

    Unknown names and providers missing from this onnxruntime build are dropped; the CPU
    provider is always last so a session can always be created.
    """
    available = set(ort.get_available_providers())
    chosen: list[str] = []
    for name in wanted:
        key = name.strip().lower()
        provider = PROVIDER_NAMES.get(key, name)  # full ORT names are accepted too
        if provider in available and provider not in chosen:
            chosen.append(provider)
        elif provider not in available:
            log.debug("execution provider %s is not available in this build", provider)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def session_options(config: EngineConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(0, int(config.intra_op_threads))
    options.inter_op_num_threads = max(0, int(config.inter_op_threads))
    # Sequential execution: our graphs are chains; parallel mode only adds thread churn.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # ORT's own warnings (e.g. unused initialisers) are noise
    # ORT's pool threads busy-wait after each run by default. Here they share two cores
    # with ffmpeg and the other video lanes, so spinning only steals their CPU.
    spinning = "1" if config.ort_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return options


def get_session(path: Path | str, config: EngineConfig) -> ort.InferenceSession:
    """The shared session for the model at ``path``, created on first use.

    Raises ModelNotInstalled when the file does not exist.
    """
    resolved = Path(path).expanduser().resolve()
    providers = resolve_providers(config.providers)
    key = (
        str(resolved),
        tuple(providers),
        int(config.intra_op_threads),
        int(config.inter_op_threads),
        bool(config.ort_spinning),
    )
    session = _SESSION_CACHE.get(key)
    if session is not None:
        return session
    with _SESSION_CACHE_LOCK:
        session = _SESSION_CACHE.get(key)
        if session is not None:
            return session
        if not resolved.is_file():
            raise ModelNotInstalled(f"model file {resolved} does not exist", path=str(resolved))
        try:
            session = ort.InferenceSession(
                str(resolved), sess_options=session_options(config), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own types: not ONNX, bad graph...
            raise ModelInvalid(
                f"ONNX Runtime cannot load {resolved.name}: {str(exc)[:300]}", path=str(resolved)
            ) from exc
        used = session.get_providers()
        wanted = [PROVIDER_NAMES.get(p.lower(), p) for p in config.providers]
        if used and used[0] != (wanted[0] if wanted else CPU):
            log.warning(
                "onnxruntime: %s runs on %s (asked for %s; available: %s)",
                resolved.name,
                used[0],
                ", ".join(config.providers) or "-",
                ", ".join(ort.get_available_providers()),
            )
        else:
            log.info("onnxruntime: %s runs on %s", resolved.name, used[0] if used else CPU)
        _SESSION_CACHE[key] = session
        return session


def session_provider(session: Any) -> str:
    """The provider a session actually runs on (the first one ORT kept)."""
    providers = session.get_providers()
    return providers[0] if providers else CPU


def clear_sessions() -> None:
    """Forget every cached session (tests, or after models were replaced on disk)."""
    with _SESSION_CACHE_LOCK:
        _SESSION_CACHE.clear()
