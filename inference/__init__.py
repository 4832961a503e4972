"""Face-swap engine: bytes and frames in, swapped bytes and frames out.

A pure library: it knows nothing of billing or HTTP. The job runner (app/) drives it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.config import EngineConfig
    from inference.engine import Engine, ImageResult
    from inference.errors import (
        Cancelled,
        FaceSizeTooSmall,
        ImageDecodeFailed,
        ImagePixelExceed,
        InferenceError,
        InvalidFaceMapping,
        ModelHashMismatch,
        ModelInvalid,
        ModelLicenceRefused,
        ModelNotInstalled,
        NoFaceDetected,
        UnsupportedMediaType,
        VideoDecodeFailed,
        VideoTooLong,
    )
    from inference.faces import Face
    from inference.frame_swapper import FaceTracker, FrameSwapper
    from inference.label import read_tag
    from inference.media import sniff

# Exported names and their modules. Loaded on first access, so that importing
# inference.config or inference.errors (the app does at start-up) does not pull in
# onnxruntime and OpenCV.
_EXPORTS = {
    "EngineConfig": "inference.config",
    "Engine": "inference.engine",
    "FaceTracker": "inference.frame_swapper",
    "FrameSwapper": "inference.frame_swapper",
    "ImageResult": "inference.engine",
    "Face": "inference.faces",
    "read_tag": "inference.label",
    "sniff": "inference.media",
    **{
        name: "inference.errors"
        for name in (
            "Cancelled",
            "FaceSizeTooSmall",
            "ImageDecodeFailed",
            "ImagePixelExceed",
            "InferenceError",
            "InvalidFaceMapping",
            "ModelHashMismatch",
            "ModelInvalid",
            "ModelLicenceRefused",
            "ModelNotInstalled",
            "NoFaceDetected",
            "UnsupportedMediaType",
            "VideoDecodeFailed",
            "VideoTooLong",
        )
    },
}

__all__ = [
    "Cancelled",
    "Engine",
    "EngineConfig",
    "Face",
    "FaceSizeTooSmall",
    "FaceTracker",
    "FrameSwapper",
    "ImageDecodeFailed",
    "ImagePixelExceed",
    "ImageResult",
    "InferenceError",
    "InvalidFaceMapping",
    "ModelHashMismatch",
    "ModelInvalid",
    "ModelLicenceRefused",
    "ModelNotInstalled",
    "NoFaceDetected",
    "UnsupportedMediaType",
    "VideoDecodeFailed",
    "VideoTooLong",
    "read_tag",
    "sniff",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
