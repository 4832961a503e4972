"""The perceptual hash that makes "the same source face" survive a re-encode or a resize
(the anomaly rules' same-source count), and still tells different portraits apart."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from inference.errors import ImageDecodeFailed
from inference.phash import SAME_IMAGE_DISTANCE, distance, perceptual_hash
from tests.conftest import FACES_DIR

PORTRAITS = ("obama.jpg", "biden.jpg", "obama-720p.jpg", "obama_small.jpg", "two_people.jpg")


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_portrait_reencoded_or_resized_keeps_its_hash_within_the_distance(name: str) -> None:
    image = cv2.imread(str(FACES_DIR / name), cv2.IMREAD_COLOR)
    q95 = perceptual_hash(_jpeg(image, 95))
    small = cv2.resize(image, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    for variant in (
        _jpeg(image, 60),
        _jpeg(small, 90),
        cv2.imencode(".png", image)[1].tobytes(),
        (FACES_DIR / name).read_bytes(),
    ):
        assert distance(q95, perceptual_hash(variant)) <= SAME_IMAGE_DISTANCE


def test_different_portraits_are_farther_apart_than_the_distance() -> None:
    hashes = {n: perceptual_hash((FACES_DIR / n).read_bytes()) for n in PORTRAITS}
    for a, b in itertools.combinations(PORTRAITS, 2):
        # Two photos of one man (obama.jpg, obama-720p.jpg) are two pictures, too.
        assert distance(hashes[a], hashes[b]) > SAME_IMAGE_DISTANCE, (a, b)


def test_a_gif_source_is_hashed_and_garbage_is_image_decode_failed() -> None:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(FACES_DIR / "obama.jpg").save(out, format="GIF")
    gif = perceptual_hash(out.getvalue())
    assert (
        distance(gif, perceptual_hash((FACES_DIR / "obama.jpg").read_bytes()))
        <= SAME_IMAGE_DISTANCE
    )
    with pytest.raises(ImageDecodeFailed):
        perceptual_hash(b"not an image at all")
