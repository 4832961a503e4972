"""inswapper_128 and GFPGAN paths, run on stand-in graphs with the real models' contracts,
and the licence and installation rules around them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inference.config import EngineConfig
from inference.engine import Engine
from inference.errors import ModelInvalid, ModelLicenceRefused, ModelNotInstalled
from inference.swappers import InswapperSwapper, load_emap
from tests.inference.conftest import (
    face_bytes,
    face_image,
    grow_box,
    make_inswapper,
    mean_abs_diff,
    outside_mask,
)

EngineFactory = Callable[..., Engine]


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def swap_png(engine: Engine, source: str, target: str, **kwargs: object) -> np.ndarray:
    result = engine.swap_image(
        face_bytes(source),
        face_bytes(target),
        output_format="png",
        watermark=False,
        **kwargs,  # type: ignore[arg-type]
    )
    return decode(result.data)


def test_an_identity_inswapper_gives_the_target_back_almost_unchanged(
    fake_engine: EngineFactory,
) -> None:
    engine = fake_engine("inswapper_128", "arcface_w600k_r50", swapper="inswapper_128")
    target = face_image("obama-720p.jpg")
    [face] = engine.analyse(face_bytes("obama-720p.jpg"))
    out = swap_png(engine, "biden.jpg", "obama-720p.jpg")
    region = grow_box(face.box, 1.0, target.shape)
    # The 128 px round trip loses fine detail but must not move anything: blurred, the
    # face is the same to within a level or so.
    assert mean_abs_diff(out[region], target[region]) < 8.0
    blurred = [cv2.GaussianBlur(image, (0, 0), 2.0) for image in (out, target)]
    assert mean_abs_diff(blurred[0][region], blurred[1][region]) < 1.5
    assert mean_abs_diff(out, target) < 0.3


def test_a_constant_colour_inswapper_changes_exactly_the_face_region(
    fake_engine: EngineFactory,
) -> None:
    engine = fake_engine(
        "inswapper_128",
        "arcface_w600k_r50",
        swapper="inswapper_128",
        swapper_colour=(0.0, 1.0, 0.0),
    )
    target = face_image("obama-720p.jpg")
    [face] = engine.analyse(face_bytes("obama-720p.jpg"))
    out = swap_png(engine, "biden.jpg", "obama-720p.jpg")
    inner = grow_box(face.box, 0.4, target.shape)
    assert out[inner][..., 1].mean() > 230 and out[inner][..., 2].mean() < 40  # green face
    far = outside_mask(target.shape, grow_box(face.box, 2.0, target.shape))
    assert np.array_equal(out[far], target[far])


def test_the_inswapper_source_input_is_the_normalised_embedding_through_emap(
    fake_engine: EngineFactory, models_dir: Path
) -> None:
    engine = fake_engine("inswapper_128", "arcface_w600k_r50", swapper="inswapper_128")
    swapper = engine.swapper
    assert isinstance(swapper, InswapperSwapper)
    image = face_image("obama.jpg")
    [face] = engine.analyse(face_bytes("obama.jpg"))
    assert face.embedding is not None  # the recognizer is installed, so analyse embeds
    latent = swapper.prepare_source(image, face).latent
    emap = load_emap(models_dir / "inswapper_128.onnx")
    expected = face.embedding @ emap
    np.testing.assert_allclose(latent[0], expected / np.linalg.norm(expected), atol=1e-5)
    assert emap.shape == (512, 512)


def test_inswapper_without_arcface_reports_the_missing_model(
    fake_engine: EngineFactory,
) -> None:
    engine = fake_engine("inswapper_128", swapper="inswapper_128")
    with pytest.raises(ModelNotInstalled) as info:
        engine.swap_image(face_bytes("obama.jpg"), face_bytes("biden.jpg"))
    assert info.value.details["model"] == "arcface_w600k_r50"


def test_a_non_commercial_swapper_is_refused_unless_the_operator_allows_it(
    models_dir: Path,
) -> None:
    make_inswapper(models_dir / "inswapper_128.onnx")
    engine = Engine(EngineConfig(models_dir=models_dir, swapper="inswapper_128"))
    with pytest.raises(ModelLicenceRefused) as info:
        engine.swap_image(face_bytes("obama.jpg"), face_bytes("biden.jpg"))
    assert info.value.code == "ModelLicenceRefused"


def test_a_swapper_that_is_not_installed_is_reported(models_dir: Path) -> None:
    engine = Engine(
        EngineConfig(
            models_dir=models_dir, swapper="inswapper_128", allow_noncommercial_models=True
        )
    )
    with pytest.raises(ModelNotInstalled):
        engine.swap_image(face_bytes("obama.jpg"), face_bytes("biden.jpg"))


def test_enhance_without_gfpgan_installed_is_model_not_installed(
    fake_engine: EngineFactory,
) -> None:
    """The enhance surcharge pays for the enhancer: without it the swap fails (and its
    Tokens go back) rather than deliver a result without what was paid for."""
    engine = fake_engine()
    with pytest.raises(ModelNotInstalled):
        engine.swap_image(face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"), enhance=True)
    result = engine.swap_image(face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"))
    assert result.faces_swapped == 1 and result.enhance_applied is False


def test_enhance_runs_gfpgan_on_the_swapped_face_only(fake_engine: EngineFactory) -> None:
    engine = fake_engine("gfpgan_1.4")
    target = face_image("obama-720p.jpg")
    [face] = engine.analyse(face_bytes("obama-720p.jpg"))
    plain = swap_png(engine, "biden.jpg", "obama-720p.jpg")
    result = engine.swap_image(
        face_bytes("biden.jpg"),
        face_bytes("obama-720p.jpg"),
        output_format="png",
        watermark=False,
        enhance=True,
    )
    enhanced = decode(result.data)
    assert result.enhance_applied is True and result.timings["enhance"] > 0
    # The stand-in halves the signal in -1..1: the face turns towards mid-grey.
    inner = grow_box(face.box, 0.4, target.shape)
    assert mean_abs_diff(enhanced[inner], plain[inner]) > 15
    far = outside_mask(target.shape, grow_box(face.box, 2.5, target.shape))
    assert np.array_equal(enhanced[far], plain[far])


def _identity_model(path: Path, inputs: dict[str, list[int]], output: list[int]) -> Path:
    """A graph with the given inputs whose output is its first input, declared ``output``."""
    first = next(iter(inputs))
    graph = helper.make_graph(
        [helper.make_node("Identity", [first], ["output"])],
        "wrong_interface",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, output)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "inputs",
    [
        {"target": [1, 128, 128, 3], "source": [1, 512]},  # NHWC
        {"target": [1, 3, 256, 256], "source": [1, 512]},  # another size
        {"target": [1, 3, 128, 128]},  # no identity input
    ],
    ids=["nhwc", "size", "inputs"],
)
def test_a_swapper_without_inswappers_interface_is_model_invalid_not_a_bad_picture(
    fake_engine: EngineFactory, models_dir: Path, inputs: dict[str, list[int]]
) -> None:
    engine = fake_engine("arcface_w600k_r50", swapper="inswapper_128")
    first = next(iter(inputs.values()))
    _identity_model(models_dir / "inswapper_128.onnx", inputs, first)
    with pytest.raises(ModelInvalid) as err:
        engine.swap_image(face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"))
    assert err.value.code == "ModelInvalid" and "input" in err.value.message


def test_an_enhancer_file_that_is_not_a_model_is_model_invalid(
    fake_engine: EngineFactory, models_dir: Path
) -> None:
    """E.g. an HTML error page saved under the model's name by a failed download."""
    engine = fake_engine()
    (models_dir / "gfpgan_1.4.onnx").write_text("<html>502 Bad Gateway</html>")
    with pytest.raises(ModelInvalid):
        engine.swap_image(face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"), enhance=True)


def test_an_enhancer_with_another_layout_is_model_invalid(
    fake_engine: EngineFactory, models_dir: Path
) -> None:
    engine = fake_engine()
    _identity_model(models_dir / "gfpgan_1.4.onnx", {"input": [1, 512, 512, 3]}, [1, 512, 512, 3])
    with pytest.raises(ModelInvalid):
        engine.swap_image(face_bytes("biden.jpg"), face_bytes("obama-720p.jpg"), enhance=True)
