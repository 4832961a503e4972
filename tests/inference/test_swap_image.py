"""Engine.swap_image with the classic swapper on real photos: what changes, what does not."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from inference.align import ARCFACE_112, warp_to_template
from inference.config import EngineConfig
from inference.engine import STAGES, Engine
from inference.errors import (
    FaceSizeTooSmall,
    ImageDecodeFailed,
    InvalidFaceMapping,
    NoFaceDetected,
    UnsupportedMediaType,
)
from inference.label import label_roi
from tests.inference.conftest import (
    FACES_DIR,
    face_bytes,
    face_image,
    grow_box,
    mean_abs_diff,
    outside_mask,
)


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def png_of(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def test_swapping_obama_onto_biden_changes_the_face_and_nothing_else(engine: Engine) -> None:
    target = face_image("biden.jpg")
    [face] = engine.analyse(face_bytes("biden.jpg"))
    result = engine.swap_image(
        face_bytes("obama.jpg"), face_bytes("biden.jpg"), output_format="png", watermark=False
    )
    out = decode(result.data)
    assert out.shape == target.shape and result.faces_swapped == 1
    inner = grow_box(face.box, 0.5, target.shape)  # eyes, nose, mouth
    assert mean_abs_diff(out[inner], target[inner]) > 12
    keep = outside_mask(target.shape, grow_box(face.box, 1.6, target.shape))
    assert mean_abs_diff(out[keep], target[keep]) < 0.05


def face_detail(engine: Engine, image: np.ndarray) -> np.ndarray:
    """The face's fine structure (eyes, brows, mouth shapes) on the 112 ArcFace template,
    without the shading and colour that the swap deliberately takes from the target."""
    [face] = engine.analyse(png_of(image))
    crop, _ = warp_to_template(image, face.landmarks, ARCFACE_112, 112)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    detail = (grey - cv2.GaussianBlur(grey, (0, 0), 3.0))[40:100, 30:82]
    return (detail - detail.mean()) / detail.std()


def test_the_swapped_face_is_the_source_face_in_the_target_pose(engine: Engine) -> None:
    source, target = face_image("obama.jpg"), face_image("biden.jpg")
    [face] = engine.analyse(face_bytes("biden.jpg"))
    out = decode(
        engine.swap_image(
            face_bytes("obama.jpg"),
            face_bytes("biden.jpg"),
            output_format="png",
            watermark=False,
        ).data
    )
    swapped = face_detail(engine, out)
    like_source = float((swapped * face_detail(engine, source)).mean())
    like_target = float((swapped * face_detail(engine, target)).mean())
    assert like_source > 0.2 and like_source > like_target + 0.15
    # The new face sits where Biden's was: same eyes, nose and mouth positions.
    [again] = engine.analyse(png_of(out))
    assert np.abs(again.landmarks - face.landmarks).max() < 0.1 * face.width


@pytest.mark.parametrize("chosen", [0, 1])
def test_explicit_mapping_swaps_only_the_chosen_face(engine: Engine, chosen: int) -> None:
    target = face_image("two_people.jpg")
    faces = engine.analyse(face_bytes("two_people.jpg"))
    result = engine.swap_image(
        face_bytes("biden.jpg") if chosen == 0 else face_bytes("obama.jpg"),
        face_bytes("two_people.jpg"),
        faces=[{"source_face": 0, "target_face": chosen}],
        output_format="png",
        watermark=False,
    )
    out = decode(result.data)
    assert result.faces_swapped == 1
    other = 1 - chosen
    changed = grow_box(faces[chosen].box, 0.5, target.shape)
    untouched = grow_box(faces[other].box, 1.2, target.shape)
    assert mean_abs_diff(out[changed], target[changed]) > 10
    assert mean_abs_diff(out[untouched], target[untouched]) == 0.0


def test_all_swaps_every_face_and_largest_only_the_biggest(engine: Engine) -> None:
    target = face_image("two_people.jpg")
    faces = engine.analyse(face_bytes("two_people.jpg"))
    biggest = max(range(2), key=lambda i: faces[i].area)
    for spec, swapped in (("all", {0, 1}), ("largest", {biggest})):
        result = engine.swap_image(
            face_bytes("obama_small.jpg"),
            face_bytes("two_people.jpg"),
            faces=spec,
            output_format="png",
            watermark=False,
        )
        out = decode(result.data)
        assert result.faces_swapped == len(swapped)
        for i, face in enumerate(faces):
            region = grow_box(face.box, 0.5, target.shape)
            diff = mean_abs_diff(out[region], target[region])
            assert (diff > 5) == (i in swapped), (spec, i, diff)


def test_a_mapping_to_a_face_the_target_lacks_is_invalid(engine: Engine) -> None:
    with pytest.raises(InvalidFaceMapping) as info:
        engine.swap_image(face_bytes("obama.jpg"), face_bytes("two_people.jpg"), faces=[(0, 2)])
    assert info.value.code == "InvalidFaceMapping"
    with pytest.raises(InvalidFaceMapping):
        engine.swap_image(face_bytes("obama.jpg"), face_bytes("two_people.jpg"), faces=[(1, 0)])


def test_a_target_without_a_face_raises_no_face_detected(engine: Engine) -> None:
    blank = png_of(np.full((300, 400, 3), 200, np.uint8))
    with pytest.raises(NoFaceDetected) as info:
        engine.swap_image(face_bytes("obama.jpg"), blank)
    assert info.value.details["role"] == "target"
    with pytest.raises(NoFaceDetected) as info:
        engine.swap_image(blank, face_bytes("obama.jpg"))
    assert info.value.details["role"] == "source"


def test_faces_below_the_minimum_size_raise_face_size_too_small(config: EngineConfig) -> None:
    strict = Engine(EngineConfig(models_dir=config.models_dir, min_face_size=400))
    with pytest.raises(FaceSizeTooSmall):
        strict.swap_image(face_bytes("biden.jpg"), face_bytes("obama_small.jpg"))


def test_bad_target_files_raise_typed_errors_before_any_swap(engine: Engine) -> None:
    source = face_bytes("obama.jpg")
    with pytest.raises(UnsupportedMediaType):
        engine.swap_image(source, b"just some text, renamed to photo.jpg\n")
    with pytest.raises(ImageDecodeFailed):
        engine.swap_image(source, face_bytes("biden.jpg")[:5000])
    with pytest.raises(ImageDecodeFailed):
        engine.swap_image(source, b"")
    with pytest.raises(UnsupportedMediaType):
        engine.swap_image(source, face_bytes("obama.jpg"), output_format="tiff")


@pytest.mark.parametrize(
    ("fmt", "mime"), [("jpg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")]
)
def test_results_come_in_the_asked_format_with_size_and_stage_timings(
    engine: Engine, fmt: str, mime: str
) -> None:
    result = engine.swap_image(
        face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"), output_format=fmt
    )
    assert result.mime == mime
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.size == (1280, 720) == (result.width, result.height)
    assert set(result.timings) == set(STAGES)
    assert all(v >= 0 for v in result.timings.values())
    assert result.timings["detect"] > 0 and result.timings["blend"] > 0
    assert not result.enhance_applied


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_the_targets_colour_profile_survives_the_swap(engine: Engine, fmt: str) -> None:
    target = face_bytes("biden.jpg")  # carries an embedded ICC profile, like phone photos
    with Image.open(io.BytesIO(target)) as image:
        profile = image.info["icc_profile"]
    result = engine.swap_image(face_bytes("obama.jpg"), target, output_format=fmt)
    assert result.faces_swapped == 1
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.info.get("icc_profile") == profile


def test_an_rgba_target_keeps_its_transparency_in_png_output(engine: Engine) -> None:
    rgba = cv2.imread(str(FACES_DIR / "32bit.png"), cv2.IMREAD_UNCHANGED)
    rgba[:40, :40, 3] = 0  # punch a transparent corner into the sample
    result = engine.swap_image(face_bytes("obama.jpg"), png_of(rgba), output_format="png")
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.mode == "RGBA"
        alpha = np.asarray(image)[..., 3]
    assert alpha[:40, :40].max() == 0 and alpha[100:, 100:].min() == 255
    assert result.faces_swapped == 1


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_the_ai_label_stays_visible_where_the_target_was_transparent(
    engine: Engine, fmt: str
) -> None:
    """A cut-out portrait, transparent around the subject: the label's corner is opaque
    in the result, so the disclosure can be seen, not drawn and then hidden."""
    rgba = cv2.imread(str(FACES_DIR / "32bit.png"), cv2.IMREAD_UNCHANGED)
    height, width = rgba.shape[:2]
    roi, _, _ = label_roi(width, height, engine.config.label_text, engine.config.label_position)
    rgba[roi.slices][..., 3] = 0  # the label's corner is background, cut away
    rgba[:40, :40, 3] = 0  # and so is another corner
    result = engine.swap_image(face_bytes("obama.jpg"), png_of(rgba), output_format=fmt)
    with Image.open(io.BytesIO(result.data)) as image:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
    assert alpha[roi.slices].min() == 255
    assert alpha[:40, :40].max() == 0  # the rest of the transparency is kept


def test_a_repeated_source_is_analysed_once_per_engine(
    config: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inference.engine as engine_module

    decoded: list[int] = []
    real_decode = engine_module.decode_image

    def counting_decode(data: bytes, cfg: EngineConfig):  # type: ignore[no-untyped-def]
        decoded.append(len(data))
        return real_decode(data, cfg)

    monkeypatch.setattr(engine_module, "decode_image", counting_decode)
    fresh = Engine(config)
    source = face_bytes("obama_small.jpg")
    fresh.swap_image(source, face_bytes("obama-720p.jpg"))
    assert decoded == [len(source), len(face_bytes("obama-720p.jpg"))]
    second = fresh.swap_image(bytes(bytearray(source)), face_bytes("two_people.jpg"))
    assert decoded[2:] == [len(face_bytes("two_people.jpg"))]  # the target only
    assert second.faces_swapped == 1
