"""What the uploaded media are, checked before anything is held (the API side).

What the target is (image or video), that the source is an image, the image headers
(size limits) and, for a video, its duration from ``inference.video.probe``: the number
the price is computed from. Cheap checks only, no pixel decoded: a JPEG, PNG, WebP or BMP
cut short is refused here from its structure (``inference.media.check_complete``), before
any hold; damage inside the compressed data is found by the decode, in the job, and its
hold is released.

Inference modules are imported inside functions: the API process loads OpenCV and ONNX
Runtime only when it first checks an upload.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import InvalidOutputFormat
from app.core.settings import Settings

IMAGE_FORMATS = ("jpg", "png", "webp")


@dataclass
class PreparedInputs:
    """Checked inputs. A video target is on disk (``target_file``), already probed."""

    kind: str  # image | video
    source: bytes
    source_ext: str
    target: bytes | None
    target_file: Path | None
    target_ext: str
    output_format: str
    width: int
    height: int
    seconds: float | None = None
    fps: float | None = None
    has_audio: bool | None = None

    def discard(self) -> None:
        if self.target_file is not None:
            self.target_file.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "seconds": self.seconds,
            "fps": self.fps,
            "has_audio": self.has_audio,
        }


_EXTENSIONS = {
    b"\xff\xd8\xff": "jpg",
    b"\x89PNG": "png",
    b"GIF8": "gif",
    b"BM": "bmp",
}


def image_ext(data: bytes) -> str:
    for magic, ext in _EXTENSIONS.items():
        if data.startswith(magic):
            return ext
    return "webp" if data[8:12] == b"WEBP" else "img"


def _image_size(data: bytes, config: Any, role: str) -> tuple[int, int]:
    """Width and height from the header alone, within the engine's pixel limits.

    An animated target (GIF, WebP, APNG) is UnsupportedMediaType: the swap would keep
    its first frame only, a still where the customer expects the animation. (A source
    is only looked at for its face: its first frame serves.)
    """
    from PIL import Image, UnidentifiedImageError

    from inference.errors import ImageDecodeFailed, ImagePixelExceed, UnsupportedMediaType
    from inference.media import PIL_FORMATS, check_complete

    try:
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as image:
            width, height = image.size
            # Not an MPO photo's second picture (a camera's preview or stereo view).
            animated = (
                role == "target"
                and image.format in ("GIF", "WEBP", "PNG")
                and getattr(image, "is_animated", False)
            )
    except Image.DecompressionBombError as exc:
        raise ImagePixelExceed(f"the {role} image is too large") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeFailed(f"the {role} image could not be read") from exc
    if animated:
        raise UnsupportedMediaType(
            "the target is an animated image; send an animation as a video (MP4, WebM, "
            "MOV or MKV) to have every frame swapped"
        )
    if max(width, height) > config.max_image_side or width * height > config.max_image_pixels:
        raise ImagePixelExceed(
            f"the {role} image is {width}x{height}; the limit is {config.max_image_side} pixels "
            f"per side and {config.max_image_pixels} pixels in all"
        )
    try:
        check_complete(data)
    except ImageDecodeFailed as exc:
        raise ImageDecodeFailed(f"the {role} image is incomplete: its file ends early") from exc
    return width, height


def _prepare_sync(
    source: bytes,
    target: bytes,
    faces: Any,
    output_format: str | None,
    config: Any,
    scratch_dir: Path,
) -> PreparedInputs:
    from inference.errors import ImageDecodeFailed, UnsupportedMediaType
    from inference.faces import parse_face_spec
    from inference.media import sniff

    parse_face_spec(faces)  # InvalidFaceMapping (400) before anything else
    if not source:
        raise ImageDecodeFailed("the source file is empty")
    if sniff(source) != "image":
        raise UnsupportedMediaType("the source must be a JPEG, PNG, WebP, BMP or GIF image")
    _image_size(source, config, "source")
    if not target:
        raise ImageDecodeFailed("the target file is empty")
    kind = sniff(target)
    fmt = (output_format or "").lower().replace("jpeg", "jpg")
    if kind == "image":
        if fmt not in ("", *IMAGE_FORMATS):
            raise InvalidOutputFormat(
                f"output_format {output_format!r} is for videos; an image target gives "
                "jpg, png or webp"
            )
        width, height = _image_size(target, config, "target")
        return PreparedInputs(
            kind="image",
            source=source,
            source_ext=image_ext(source),
            target=target,
            target_file=None,
            target_ext=image_ext(target),
            output_format=fmt or "jpg",
            width=width,
            height=height,
        )
    if kind == "video":
        if fmt not in ("", "mp4"):
            raise InvalidOutputFormat(
                f"output_format {output_format!r} is for images; a video target gives mp4"
            )
        from inference.video import probe

        scratch_dir.mkdir(parents=True, exist_ok=True)
        path = scratch_dir / f"upload-{uuid.uuid4().hex}.video"
        path.write_bytes(target)
        try:
            info = probe(path, config)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return PreparedInputs(
            kind="video",
            source=source,
            source_ext=image_ext(source),
            target=None,
            target_file=path,
            target_ext="video",
            output_format="mp4",
            width=info.width,
            height=info.height,
            seconds=info.duration,
            fps=info.fps,
            has_audio=info.has_audio,
        )
    raise UnsupportedMediaType(
        "the target is neither a supported image (JPEG, PNG, WebP, BMP, GIF) nor a supported "
        "video (MP4, MOV, M4V, 3GP, WebM, MKV, AVI)"
    )


async def prepare_inputs(
    source: bytes,
    target: bytes,
    *,
    faces: Any,
    output_format: str | None,
    settings: Settings,
) -> PreparedInputs:
    """Check the inputs and measure the target (a video in a thread: probing runs ffmpeg).

    Raises the engine's typed errors (ImageDecodeFailed, UnsupportedMediaType,
    ImagePixelExceed, VideoDecodeFailed, VideoTooLong, InvalidFaceMapping) and
    BadRequest(InvalidOutputFormat); nothing has been held or stored yet.
    """
    from inference.media import sniff

    args = (
        source,
        target,
        faces,
        output_format,
        settings.engine_config(),
        scratch_root(settings) / "uploads",
    )
    if sniff(target) == "video":
        return await asyncio.to_thread(_prepare_sync, *args)
    # Image headers only, a fraction of a millisecond: less than a thread hop costs.
    return _prepare_sync(*args)


def scratch_root(settings: Settings) -> Path:
    """Temporary files of jobs (probe copies, video outputs); swept by the cleanup loop."""
    return settings.data_dir / "tmp" / "jobs"
