"""The AI-generated disclosure: visible on the pixels (switchable), always in the file."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from inference.config import EngineConfig
from inference.engine import Engine
from inference.label import draw_label, encode_tagged, label_roi, read_tag
from tests.inference.conftest import face_bytes


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("background", [0, 255])
def test_the_label_reads_on_dark_and_light_backgrounds(background: int) -> None:
    image = np.full((720, 1280, 3), background, np.uint8)
    roi = draw_label(image, "AI-generated", "bottom-right")
    region = cv2.cvtColor(image[roi.slices], cv2.COLOR_BGR2GRAY)
    # White letters and a dark plate, whatever was underneath.
    assert (region > 200).mean() > 0.05
    assert (region < 110).mean() > 0.4
    assert roi.x1 > 1200 and roi.y1 > 680  # in the bottom-right corner


def test_the_label_scales_with_the_image_and_honours_the_position() -> None:
    small, _, _ = label_roi(320, 240, "AI-generated", "top-left")
    large, _, _ = label_roi(3840, 2160, "AI-generated", "top-left")
    assert small.x0 < 20 and small.y0 < 20
    assert large.height > 4 * small.height
    assert large.width < 3840 * 0.4  # legible, not a banner
    other, _, _ = label_roi(1000, 800, "AI-generated", "bottom-left")
    assert other.x0 < 50 and other.y1 > 750


def test_swap_results_carry_the_visible_label_unless_switched_off(engine: Engine) -> None:
    args = (face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"))
    labelled = decode(engine.swap_image(*args, output_format="png").data)
    plain = decode(engine.swap_image(*args, output_format="png", watermark=False).data)
    roi, _, _ = label_roi(1280, 720, engine.config.label_text, engine.config.label_position)
    assert np.abs(labelled[roi.slices].astype(int) - plain[roi.slices].astype(int)).mean() > 20
    rest = np.ones((720, 1280), bool)
    rest[roi.slices] = False
    assert np.array_equal(labelled[rest], plain[rest])


def test_the_label_text_and_position_come_from_the_config(config: EngineConfig) -> None:
    custom = Engine(
        EngineConfig(
            models_dir=config.models_dir, label_text="Synthetic image", label_position="top-left"
        )
    )
    args = (face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"))
    labelled = decode(custom.swap_image(*args, output_format="png").data)
    plain = decode(custom.swap_image(*args, output_format="png", watermark=False).data)
    roi, _, _ = label_roi(1280, 720, "Synthetic image", "top-left")
    assert roi.x0 < 30 and roi.y0 < 30
    assert np.abs(labelled[roi.slices].astype(int) - plain[roi.slices].astype(int)).mean() > 20


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_every_output_format_carries_the_metadata_tag(engine: Engine, fmt: str) -> None:
    result = engine.swap_image(
        face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"), output_format=fmt, watermark=False
    )
    assert read_tag(result.data) == engine.config.metadata_tag
    with Image.open(io.BytesIO(result.data)) as image:
        image.load()  # the tagged file is still a valid image
        info = image.info
        if fmt == "png":
            assert info["Comment"] == engine.config.metadata_tag
        elif fmt == "jpg":
            assert info["comment"] == engine.config.metadata_tag.encode()
        else:
            assert image.getexif()[0x010E] == engine.config.metadata_tag
        xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
        text = xmp.decode() if isinstance(xmp, bytes) else str(xmp)
        assert "digitalsourcetype/compositeWithTrainedAlgorithmicMedia" in text


def test_untagged_files_read_as_untagged() -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert read_tag(buf.tobytes()) is None
    tagged = encode_tagged(np.zeros((8, 8, 3), np.uint8), "jpg", "tag & <more>")
    assert read_tag(tagged) == "tag & <more>"
