"""A perceptual hash of an image: 64 bits that stay nearly the same when the picture is
re-encoded (another JPEG quality, PNG), resized or lightly recoloured, and differ in about
half their bits between unrelated pictures.

The DCT hash ("pHash"): the grayscale image shrunk to 32x32, its 2-D DCT, and the 8x8
lowest frequencies (the picture's coarse shape, what survives compression and scaling)
compared with their median, one bit each. Two hashes are compared by Hamming distance
(``distance``); the anomaly rules count a face as "the same source" within
``SAME_IMAGE_DISTANCE`` bits.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from inference.errors import ImageDecodeFailed

HASH_BITS = 64
# Re-encodes and resizes of one photo land within a few bits (tests/inference/test_phash.py
# measures 0 to 4 on the portraits of shared/media/faces); unrelated portraits 20 and more.
SAME_IMAGE_DISTANCE = 10
_SIDE = 32
_LOW = 8
# A big JPEG is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg itself (its DCT scaling):
# the 32x32 thumbnail is the same, for a fraction of the decode.
_REDUCED = (
    (2048, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    (1024, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (512, cv2.IMREAD_REDUCED_GRAYSCALE_2),
)


def _decode_gray(data: bytes) -> np.ndarray:
    """Grayscale pixels: by OpenCV (reduced when the header says the image is large), or
    by Pillow for what OpenCV does not read (a GIF's first frame)."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            longest_side = max(header.size)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise ImageDecodeFailed("the image could not be decoded") from exc
    flag = cv2.IMREAD_GRAYSCALE
    for at_least, reduced in _REDUCED:
        if longest_side >= at_least:
            flag = reduced
            break
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is not None and image.size:
        return image
    try:
        with Image.open(io.BytesIO(data)) as picture:
            return np.asarray(picture.convert("L"))
    except Exception as exc:  # noqa: BLE001
        raise ImageDecodeFailed("the image could not be decoded") from exc


def perceptual_hash(data: bytes) -> int:
    """The 64-bit DCT hash of an encoded image (JPEG, PNG, WebP, BMP, GIF).

    Raises ImageDecodeFailed when the bytes are no image we can decode.
    """
    gray = _decode_gray(data)
    small = cv2.resize(gray, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:_LOW, :_LOW].flatten()
    # The DC term (the mean brightness) is left out of the median: it dwarfs the rest.
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def distance(a: int, b: int) -> int:
    """Bits that differ between two hashes."""
    return (a ^ b).bit_count()
