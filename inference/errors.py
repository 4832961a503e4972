"""Typed engine errors. Each carries the stable error code of the public contract.

The HTTP layer maps ``code`` to a status; the engine never needs to know about HTTP.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class: ``code`` is the contract's CamelCase error code."""

    code = "InferenceFailed"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details


class ImageDecodeFailed(InferenceError):
    """The file could not be decoded as an image."""

    code = "ImageDecodeFailed"


class ImagePixelExceed(InferenceError):
    """The image is larger than the configured pixel limits."""

    code = "ImagePixelExceed"


class UnsupportedMediaType(InferenceError):
    """The file is neither a supported image nor a supported video."""

    code = "UnsupportedMediaType"


class NoFaceDetected(InferenceError):
    """No face was found in the image."""

    code = "NoFaceDetected"


class FaceSizeTooSmall(InferenceError):
    """The faces found are too small to swap well."""

    code = "FaceSizeTooSmall"


class InvalidFaceMapping(InferenceError):
    """An explicit source->target face pair names a face that does not exist."""

    code = "InvalidFaceMapping"


class VideoDecodeFailed(InferenceError):
    """The file could not be decoded as a video."""

    code = "VideoDecodeFailed"


class VideoTooLong(InferenceError):
    """The video is longer than the configured limit."""

    code = "VideoTooLong"


class ModelNotInstalled(InferenceError):
    """A model the request needs is not installed in the models directory."""

    code = "ModelNotInstalled"


class ModelLicenceRefused(InferenceError):
    """The model's licence is non-commercial and non-commercial models are not allowed."""

    code = "ModelLicenceRefused"


class ModelHashMismatch(InferenceError):
    """A model file's sha256 does not match the catalogue."""

    code = "ModelHashMismatch"


class ModelInvalid(InferenceError):
    """A model file cannot be used: ONNX Runtime cannot load it, or its inputs and outputs
    are not the interface the catalogue gives for its name (another model, or another
    export of it, under the expected file name)."""

    code = "ModelInvalid"


class Cancelled(InferenceError):
    """Processing was cancelled by the caller; ``frames_done`` says how far it got."""

    code = "Canceled"

    def __init__(self, message: str = "", frames_done: int = 0, **details: object) -> None:
        super().__init__(message, frames_done=frames_done, **details)
        self.frames_done = frames_done
