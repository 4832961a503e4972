"""Shared fixtures for the inference tests: real photos and models from /work/shared, and
small stand-in ONNX graphs with the contracts of the learned models we cannot ship."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference.config import EngineConfig
from inference.engine import Engine
from inference.registry import ModelRegistry, load_catalogue

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODELS_DIR = Path(os.environ.get("SWAPMETER_MODELS_DIR", SHARED / "models"))
MEDIA_DIR = Path(os.environ.get("SWAPMETER_MEDIA_DIR", SHARED / "media"))
FACES_DIR = MEDIA_DIR / "faces"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"


def face_bytes(name: str) -> bytes:
    return (FACES_DIR / name).read_bytes()


def face_image(name: str) -> np.ndarray:
    image = cv2.imread(str(FACES_DIR / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def grow_box(box: np.ndarray, factor: float, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """(ys, xs) slices of ``box`` (x1, y1, x2, y2) scaled about its centre, clipped."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    h, w = shape[:2]
    x0, x1 = max(0, int(cx - hw)), min(w, int(cx + hw))
    y0, y1 = max(0, int(cy - hh)), min(h, int(cy + hh))
    return slice(y0, y1), slice(x0, x1)


def outside_mask(shape: tuple[int, ...], *regions: tuple[slice, slice]) -> np.ndarray:
    keep = np.ones(shape[:2], dtype=bool)
    for ys, xs in regions:
        keep[ys, xs] = False
    return keep


@pytest.fixture(scope="session")
def config() -> EngineConfig:
    return EngineConfig(models_dir=MODELS_DIR)


@pytest.fixture(scope="session")
def engine(config: EngineConfig) -> Engine:
    """The default engine (YuNet + classic swapper), shared: sessions load once."""
    return Engine(config)


# -- stand-in learned models ---------------------------------------------------------------


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _tensor(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def make_inswapper(path: Path, colour_rgb: tuple[float, float, float] | None = None) -> Path:
    """inswapper_128's interface: ``target`` [1,3,128,128] + ``source`` [1,512] -> ``output``.

    ``colour_rgb`` None returns the target face unchanged; otherwise a flat colour (0..1).
    The emap (512x512) is the graph's last initializer, as in the real model.
    """
    nodes = []
    inits = []
    if colour_rgb is None:
        nodes.append(helper.make_node("Identity", ["target"], ["output"]))
    else:
        inits.append(numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero"))
        colour = np.array(colour_rgb, np.float32).reshape(1, 3, 1, 1)
        inits.append(numpy_helper.from_array(colour, "colour"))
        nodes.append(helper.make_node("Mul", ["target", "zero"], ["blank"]))
        nodes.append(helper.make_node("Add", ["blank", "colour"], ["output"]))
    rng = np.random.default_rng(7)
    inits.append(numpy_helper.from_array(rng.normal(size=(512, 512)).astype(np.float32), "emap"))
    graph = helper.make_graph(
        nodes,
        "fake_inswapper",
        [_tensor("target", [1, 3, 128, 128]), _tensor("source", [1, 512])],
        [_tensor("output", [1, 3, 128, 128])],
        initializer=inits,
    )
    return _save(graph, path)


def make_arcface(path: Path) -> Path:
    """ArcFace's interface: ``input.1`` [1,3,112,112] -> [1,512] (mean colour, projected)."""
    weights = np.random.default_rng(3).normal(size=(3, 512)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "fake_arcface",
        [_tensor("input.1", [1, 3, 112, 112])],
        [_tensor("embedding", [1, 512])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    return _save(graph, path)


def make_gfpgan(path: Path) -> Path:
    """GFPGAN's interface: ``input`` [1,3,512,512] in -1..1 -> ``output`` (halved: greyer)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "half"], ["output"])],
        "fake_gfpgan",
        [_tensor("input", [1, 3, 512, 512])],
        [_tensor("output", [1, 3, 512, 512])],
        initializer=[numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )
    return _save(graph, path)


def relaxed_registry(config: EngineConfig) -> ModelRegistry:
    """The real catalogue without size and hash pins, so stand-in graphs load."""
    catalogue = {
        name: dataclasses.replace(spec, size=None, sha256=None)
        for name, spec in load_catalogue().items()
    }
    return ModelRegistry(config, catalogue=catalogue)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding the real YuNet (linked, not copied) and nothing else."""
    directory = tmp_path / "models"
    directory.mkdir()
    (directory / YUNET_FILE).symlink_to(MODELS_DIR / YUNET_FILE)
    return directory


@pytest.fixture
def fake_engine(models_dir: Path) -> Callable[..., Engine]:
    """Build an Engine over ``models_dir`` with the stand-in graphs named in ``models``."""

    builders: dict[str, Callable[[Path], Path]] = {
        "inswapper_128": make_inswapper,
        "arcface_w600k_r50": make_arcface,
        "gfpgan_1.4": make_gfpgan,
    }

    def build(
        *models: str, swapper_colour: tuple[float, float, float] | None = None, **overrides: object
    ) -> Engine:
        catalogue = load_catalogue()
        for name in models:
            path = models_dir / catalogue[name].file
            if name == "inswapper_128":
                make_inswapper(path, swapper_colour)
            else:
                builders[name](path)
        settings: dict[str, object] = {
            "models_dir": models_dir,
            "allow_noncommercial_models": True,
            **overrides,
        }
        config = EngineConfig(**settings)  # type: ignore[arg-type]
        return Engine(config, registry=relaxed_registry(config))

    return build
