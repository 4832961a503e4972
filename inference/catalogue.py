"""The model catalogue (catalogue.json): each model's file, hash, licence and interface.

``check_interface`` holds a loaded ONNX session to the interface the catalogue lists, so a
file of another layout, precision or size is refused when it loads, not used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from inference.errors import ModelInvalid

ModelKind = Literal["detector", "landmarker", "recognizer", "swapper", "enhancer"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    layout: str | None = None
    colour: str | None = None
    normalisation: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    file: str
    sha256: str | None  # None: unknown upstream; checked by size and by the hash pinned at install
    size: int | None
    licence: str
    commercial_use: bool
    url: str | None
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    notes: str = ""


# Element types as the catalogue names them, and as ONNX Runtime does.
_ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "int64": "tensor(int64)",
    "uint8": "tensor(uint8)",
}


def check_interface(spec: ModelSpec, session: Any) -> None:
    """ModelInvalid unless the loaded model has the catalogue's interface for ``spec``:
    as many inputs, each of the same rank, fixed sizes and element type, and the same of
    the outputs where the catalogue lists each of them (it describes SCRFD's nine outputs
    as three families). Sizes that either side leaves open (a name, None) are not compared.
    Names are not compared: exports differ in them, and the code feeds inputs by position.

    Without this a model of another layout (NHWC), precision or size would fail every
    request with an internal error, or worse, give pictures made of the wrong pixels.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != len(spec.inputs):
        problems = [f"{len(inputs)} inputs, expected {len(spec.inputs)}"]
    else:
        problems = _mismatches("input", spec.inputs, inputs)
    if len(spec.outputs) == len(outputs):
        problems += _mismatches("output", spec.outputs, outputs)
    if problems:
        raise ModelInvalid(
            f"the file for model {spec.name} does not have its interface: " + "; ".join(problems),
            model=spec.name,
        )


def _mismatches(role: str, expected: tuple[TensorSpec, ...], actual: list[Any]) -> list[str]:
    problems = []
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        shape = list(got.shape)
        fixed_differ = len(shape) != len(want.shape) or any(
            isinstance(w, int) and isinstance(g, int) and w != g
            for w, g in zip(want.shape, shape, strict=False)
        )
        if fixed_differ:
            problems.append(f"{role} {index} has shape {shape}, expected {list(want.shape)}")
        wanted_type = _ORT_TYPES.get(want.dtype)
        if wanted_type is not None and got.type != wanted_type:
            problems.append(f"{role} {index} is {got.type}, expected {wanted_type}")
    return problems


def _tensor(raw: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=raw["name"],
        shape=tuple(raw.get("shape", ())),
        dtype=raw.get("dtype", "float32"),
        layout=raw.get("layout"),
        colour=raw.get("colour"),
        normalisation=raw.get("normalisation"),
    )


@cache
def load_catalogue() -> dict[str, ModelSpec]:
    """The built-in catalogue (inference/catalogue.json), by model name."""
    text = resources.files("inference").joinpath("catalogue.json").read_text(encoding="utf-8")
    specs: dict[str, ModelSpec] = {}
    for raw in json.loads(text)["models"]:
        specs[raw["name"]] = ModelSpec(
            name=raw["name"],
            kind=raw["kind"],
            file=raw["file"],
            sha256=(raw.get("sha256") or None),
            size=raw.get("size"),
            licence=raw["licence"],
            commercial_use=bool(raw["commercial_use"]),
            url=raw.get("url"),
            inputs=tuple(_tensor(t) for t in raw.get("inputs", ())),
            outputs=tuple(_tensor(t) for t in raw.get("outputs", ())),
            notes=raw.get("notes", ""),
        )
    return specs


def iter_specs(kind: str | None = None) -> Iterator[ModelSpec]:
    """Catalogue entries, optionally of one kind (for the engine's model choices)."""
    for spec in load_catalogue().values():
        if kind is None or spec.kind == kind:
            yield spec
