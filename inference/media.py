"""Safe image decoding and encoding: untrusted bytes in, a BGR frame (plus alpha) out.

Sizes are checked from the file header before any pixel is decoded, so a small file that
claims a huge canvas (a decompression bomb) costs nothing.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inference.config import EngineConfig
from inference.errors import ImageDecodeFailed, ImagePixelExceed, UnsupportedMediaType

MediaKind = Literal["image", "video"]
OutputFormat = Literal["jpg", "png", "webp"]

# Pillow plugins we let near untrusted bytes: the formats we sniff, nothing else (no EPS,
# which shells out to Ghostscript, no PSD, no TGA without a magic number).
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")

MIME_TYPES: dict[str, str] = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
JPEG_QUALITY = 92
WEBP_QUALITY = 90
PNG_COMPRESSION = 3  # zlib level: 3 is several times faster than 9 for ~10% more bytes
# An ICC profile in JPEG: APP2 segments of this header, a sequence number and a count,
# then up to 65,519 bytes of the profile each (a segment holds 65,533 after its length).
ICC_JPEG_HEADER = b"ICC_PROFILE\x00"
ICC_JPEG_CHUNK = 65_519
# Pillow modes whose pixels an RGB profile describes (a palette's entries are RGB).
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})

_pillow_limit_lock = threading.Lock()


def sniff(data: bytes) -> MediaKind | None:
    """Say what the bytes are from their magic number: "image", "video" or None."""
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return "image"  # JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image"
    if head.startswith(b"BM") and len(head) >= 26:
        return "image"  # BMP: "BM" alone is too weak for text, so demand a header's length
    if head.startswith(b"RIFF") and len(head) >= 12:
        if head[8:12] == b"WEBP":
            return "image"
        if head[8:12] == b"AVI ":
            return "video"
        return None
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"  # EBML: Matroska and WebM
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        # HEIF/AVIF stills share the ISO box format; we do not decode them.
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif"):
            return None
        return "video"  # mp4, m4v, mov (qt), 3gp
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video"  # QuickTime files written without an ftyp box
    return None


@dataclass
class DecodedImage:
    """A decoded image: ``bgr`` is HxWx3 uint8; ``alpha`` is HxW uint8 when the file had one.

    Transparent pixels are composited onto white in ``bgr`` so the detector and the JPEG
    output see what a viewer sees; the alpha goes back on for PNG and WebP output.
    """

    bgr: np.ndarray
    alpha: np.ndarray | None = None
    format: str = ""
    # The file's RGB colour profile (a phone's Display P3, Adobe RGB), carried over to the
    # output: without it a viewer shows those pixels as sRGB, visibly duller.
    icc: bytes | None = None

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])


def _check_size(width: int, height: int, config: EngineConfig) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeFailed(f"the image header gives a size of {width}x{height}")
    if max(width, height) > config.max_image_side or width * height > config.max_image_pixels:
        raise ImagePixelExceed(
            f"the image is {width}x{height}; the limit is {config.max_image_side} px a side "
            f"and {config.max_image_pixels} pixels",
            width=width,
            height=height,
        )


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the fixed header of PNG, GIF and BMP files, without Pillow.

    Catches a bomb even when the rest of the file is missing, so the caller hears "too
    large" rather than "corrupt". JPEG and WebP sizes come from Pillow's lazy open.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"BM") and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 v1 header: 16-bit sizes
            return struct.unpack("<HH", data[18:22])
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)  # negative height: a top-down bitmap
    return None


def check_complete(data: bytes) -> None:
    """Refuse a JPEG, PNG, WebP or BMP whose bytes stop before its image does (a cut
    upload, the first 4 KB of a photo), from its structure alone: no pixel is decoded.

    JPEG: the segments up to the first scan, then an end-of-image marker after it (the
    scan data cannot hold one: a 0xFF there is followed by 0x00 or a restart marker).
    PNG: the chunks, by their lengths, up to IEND, with pixel data before it. WebP: the
    RIFF length. BMP: the pixel rows an uncompressed bitmap needs. A few microseconds
    where a full decode of a 720p JPEG takes about 8 ms. Damage inside the compressed
    data (and a cut GIF) is found by the decode, in the job. Raises ImageDecodeFailed.
    """
    if data.startswith(b"\xff\xd8"):
        complete = _jpeg_complete(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        complete = _png_complete(data)
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        complete = len(data) >= 8 + struct.unpack("<I", data[4:8])[0]
    elif data.startswith(b"BM") and len(data) >= 34:
        complete = _bmp_complete(data)
    else:
        return
    if not complete:
        raise ImageDecodeFailed("the image is incomplete: its file ends before the image does")


def _jpeg_complete(data: bytes) -> bool:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length: TEM, RSTn, SOI
            pos += 2
            continue
        if marker == 0xD9:  # the end before any scan
            return False
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to a marker
            return end <= len(data) and data.rfind(b"\xff\xd9", end) != -1
        pos = end
    return False


def _png_complete(data: bytes) -> bool:
    pos, pixels = 8, False
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        pos += 12 + length
        if kind == b"IDAT":
            pixels = True
        elif kind == b"IEND":
            return pixels and pos <= len(data)
    return False


def _bmp_complete(data: bytes) -> bool:
    offset, header = struct.unpack("<II", data[10:18])
    if header < 40:
        return True  # an OS/2 v1 header: left to the decoder
    width, height, _planes, bits, compression = struct.unpack("<iiHHI", data[18:34])
    if compression not in (0, 3) or bits not in (1, 4, 8, 16, 24, 32):
        return True  # run-length encoded: its length is not known from the header
    stride = (abs(width) * bits + 31) // 32 * 4
    return len(data) >= offset + stride * abs(height)


def _set_pillow_limit(config: EngineConfig) -> None:
    # Process-wide Pillow setting. Image.open refuses (DecompressionBombError) anything over
    # twice this from the header alone; our own check catches the rest, also before any
    # pixel is decoded. Never lower it below what another config in this process allowed.
    with _pillow_limit_lock:
        current = Image.MAX_IMAGE_PIXELS or 0
        if current < config.max_image_pixels:
            Image.MAX_IMAGE_PIXELS = config.max_image_pixels


def decode_image(data: bytes, config: EngineConfig) -> DecodedImage:
    """Decode untrusted image bytes to BGR, refusing oversize, truncated or foreign files.

    Raises ImageDecodeFailed (empty, corrupt, truncated), UnsupportedMediaType (not an
    image we accept, including a video) and ImagePixelExceed (over the configured limits).
    """
    if not data:
        raise ImageDecodeFailed("the file is empty")
    kind = sniff(data)
    if kind == "video":
        raise UnsupportedMediaType("a video was given where an image is expected")
    if kind is None:
        raise UnsupportedMediaType("the file is not a JPEG, PNG, WebP, BMP or GIF image")

    declared = _declared_size(data)
    if declared is not None:
        _check_size(*declared, config)
    check_complete(data)
    _set_pillow_limit(config)
    try:
        image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImagePixelExceed(f"the image is too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeFailed(f"the image could not be read: {exc}") from exc

    with image:
        _check_size(image.width, image.height, config)  # header only: nothing decoded yet
        try:
            image.load()
            # Phones store the sensor's orientation in EXIF; users expect what they saw.
            ImageOps.exif_transpose(image, in_place=True)
            decoded = _to_bgr(image)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageDecodeFailed(f"the image could not be decoded: {exc}") from exc
        decoded.icc = _rgb_profile(image)
        return decoded


def _rgb_profile(image: Image.Image) -> bytes | None:
    """The image's ICC profile when it describes the RGB pixels we keep; None otherwise
    (none embedded, or a grey or CMYK profile, which would be wrong for RGB output)."""
    icc = image.info.get("icc_profile")
    if not isinstance(icc, bytes) or len(icc) < 128 or image.mode not in _RGB_MODES:
        return None
    return icc if icc[16:20] == b"RGB " else None  # the header's data colour space


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def after_jpeg_app_segments(data: bytes) -> int:
    """Where new metadata segments go in a JPEG: after SOI and the APPn run already there
    (JFIF wants its APP0 first)."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return pos


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def after_png_header(data: bytes) -> int:
    """Where new chunks go in a PNG: right after IHDR, before any palette or pixels."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    ihdr_len = struct.unpack(">I", data[8:12])[0]
    return 8 + 12 + ihdr_len  # signature, then IHDR's length, type, data and CRC


def _with_icc(data: bytes, fmt: str, icc: bytes) -> bytes:
    """JPEG or PNG bytes with ``icc`` embedded (APP2 segments, or an iCCP chunk)."""
    if fmt == "png":
        pos = after_png_header(data)
        chunk = png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
        return data[:pos] + chunk + data[pos:]
    pieces = [icc[i : i + ICC_JPEG_CHUNK] for i in range(0, len(icc), ICC_JPEG_CHUNK)]
    if len(pieces) > 255:
        return data  # beyond what JPEG can carry (16 MB): leave it out
    segments = b"".join(
        jpeg_segment(0xE2, ICC_JPEG_HEADER + bytes((n, len(pieces))) + piece)
        for n, piece in enumerate(pieces, start=1)
    )
    pos = after_jpeg_app_segments(data)
    return data[:pos] + segments + data[pos:]


def _to_bgr(image: Image.Image) -> DecodedImage:
    fmt = (image.format or "").upper()
    # A palette, grey or RGB image may name one transparent colour (PNG's tRNS, GIF).
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        # No converted copy of an RGBA image: 4 bytes a pixel less at the peak.
        rgba = np.asarray(image if image.mode == "RGBA" else image.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[:, :, 3])
        bgr = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)
        if alpha.min() < 255:
            # Composite onto white: what the face detector and a JPEG should see. A PNG or
            # WebP result takes it back off (``encode_image``).
            for rows, a in _alpha_blocks(alpha):
                block = bgr[rows]
                block[...] = (block * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)
        return DecodedImage(bgr=bgr, alpha=alpha, format=fmt)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: Pillow's convert() would clip it to 255 (almost white); scale it
        # to 8 bits at once, so it costs no more to work on than an 8-bit photo.
        return DecodedImage(
            bgr=cv2.cvtColor(_grey_to_8_bits(image), cv2.COLOR_GRAY2BGR), format=fmt
        )
    if image.mode == "L":
        return DecodedImage(bgr=cv2.cvtColor(np.asarray(image), cv2.COLOR_GRAY2BGR), format=fmt)
    if image.mode != "RGB":
        image = image.convert("RGB")  # CMYK, 16-bit grey, palette, 1-bit
    return DecodedImage(bgr=cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR), format=fmt)


def _grey_to_8_bits(image: Image.Image) -> np.ndarray:
    """The top 8 bits of each sample of a 16-bit (or 32-bit) grey image, as uint8.

    A 16-bit image's high bytes are taken as a view of its samples, then copied once: no
    wider working copy (a 40 MP scan is 80 MB as Pillow holds it, 40 MB once converted).
    """
    grey = np.asarray(image)
    if grey.dtype.itemsize == 2:
        high = (
            1
            if grey.dtype.byteorder == "<" or (grey.dtype.byteorder == "=" and np.little_endian)
            else 0
        )
        return np.ascontiguousarray(grey.view(np.uint8)[:, high::2])
    # Mode "I" (32-bit): 16-bit samples, or full-range ones from another source.
    shift = 24 if grey.max(initial=0) > 0xFFFF else 8
    return (np.clip(grey, 0, None) >> shift).astype(np.uint8)


BLEND_ROWS = 256  # rows blended at once: float work stays small on a 40 MP image


def _alpha_blocks(alpha: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Row blocks of the image and their alpha as 0..1 floats, shaped to multiply BGR."""
    for top in range(0, alpha.shape[0], BLEND_ROWS):
        rows = slice(top, top + BLEND_ROWS)
        yield rows, alpha[rows, :, None].astype(np.float32) * (1.0 / 255.0)


def _off_white(bgr: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Undo the decoder's compositing onto white where the image is partly transparent:
    a soft edge or shadow keeps its own colour instead of a pale halo."""
    if not ((alpha > 0) & (alpha < 255)).any():
        return bgr
    out = bgr.copy()
    for rows, a in _alpha_blocks(alpha):
        block = out[rows]
        partial = (a > 0) & (a < 1)
        own = np.clip((block - 255.0 * (1.0 - a)) / np.maximum(a, 1e-6) + 0.5, 0, 255)
        block[...] = np.where(partial, own, block).astype(np.uint8)
    return out


def normalise_format(output_format: str) -> OutputFormat:
    fmt = output_format.lower().lstrip(".")
    if fmt == "jpeg":
        fmt = "jpg"
    if fmt not in MIME_TYPES:
        raise UnsupportedMediaType(f"output format {output_format!r} is not jpg, png or webp")
    return fmt  # type: ignore[return-value]


def encode_image(
    bgr: np.ndarray,
    output_format: str,
    *,
    alpha: np.ndarray | None = None,
    xmp: str | None = None,
    exif: bytes | None = None,
    icc: bytes | None = None,
) -> bytes:
    """Encode a BGR frame; ``alpha`` is put back for PNG and WebP (JPEG has none), and
    ``icc`` (an RGB colour profile, ``DecodedImage.icc``) is embedded in every format.

    ``xmp`` and ``exif`` are embedded by WebP only; label.py tags JPEG and PNG bytes.
    """
    fmt = normalise_format(output_format)
    if fmt == "jpg":
        alpha = None
    if alpha is not None:
        bgr = _off_white(bgr, alpha)
    if fmt == "webp":
        # OpenCV's WebP writer cannot carry metadata; Pillow's can.
        if alpha is not None:
            pixels = np.dstack([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), alpha])
            image = Image.fromarray(pixels, "RGBA")
        else:
            image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "RGB")
        out = io.BytesIO()
        kwargs: dict[str, object] = {"quality": WEBP_QUALITY, "method": 4}
        if xmp:
            kwargs["xmp"] = xmp.encode("utf-8")
        if exif:
            kwargs["exif"] = exif
        if icc:
            kwargs["icc_profile"] = icc
        image.save(out, format="WEBP", **kwargs)
        return out.getvalue()
    if fmt == "png":
        pixels = np.dstack([bgr, alpha]) if alpha is not None else bgr
        ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ImageDecodeFailed(f"the image could not be encoded as {fmt}")
    return _with_icc(buf.tobytes(), fmt, icc) if icc else buf.tobytes()
