"""The engine facade the worker drives: analyse faces, swap an image, swap video frames.

Models load on first use and their ONNX Runtime sessions are shared process-wide
(inference.runtime); an Engine is safe to share between threads. Video frames are
swapped by the FrameSwapper it makes (inference.frame_swapper).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from inference.catalogue import check_interface
from inference.config import EngineConfig
from inference.enhancer import FaceEnhancer
from inference.errors import ModelInvalid, ModelNotInstalled
from inference.faces import (
    ArcFaceRecognizer,
    Detector,
    Face,
    FaceSpec,
    ScrfdDetector,
    YuNetDetector,
    parse_face_spec,
    select_pairs,
    source_indices,
    usable_faces,
)
from inference.frame_swapper import FrameSwapper
from inference.label import draw_label, encode_tagged
from inference.media import MIME_TYPES, DecodedImage, decode_image, normalise_format
from inference.memory import keep_freed_memory
from inference.registry import ModelRegistry
from inference.runtime import get_session
from inference.swappers import (
    ClassicSwapper,
    InswapperSwapper,
    SourceFace,
    Swapper,
    blend,
    load_emap,
)

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "swap", "blend", "enhance", "encode")
RECOGNIZER = "arcface_w600k_r50"


def models_missing(config: EngineConfig, registry: ModelRegistry | None = None) -> list[str]:
    """The models a swap with ``config`` needs that are not installed: the face detector
    and, for a learned swapper, the swapper and the face recognizer. (The enhancer is only
    needed by requests that ask for it.) For a warning at start-up, rather than a first
    customer's 503."""
    registry = registry or ModelRegistry(config)
    needed = [config.detector]
    if config.swapper != "classic":
        needed += [config.swapper, RECOGNIZER]
    return [name for name in needed if name in registry.catalogue and not registry.installed(name)]


@dataclass
class ImageResult:
    """A swapped image. ``timings`` holds seconds per stage (decode, detect, swap, blend,
    enhance, encode; encode includes drawing the label)."""

    data: bytes
    mime: str
    width: int
    height: int
    faces_swapped: int
    enhance_applied: bool
    timings: dict[str, float] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.timings = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += time.perf_counter() - start


@dataclass
class _SourceEntry:
    """A source image's usable faces and, per face index, what the swapper prepared."""

    faces: list[Face]
    prepared: dict[int, SourceFace] = field(default_factory=dict)


class Engine:
    """Face analysis and swapping for one configuration.

    ``registry`` defaults to the catalogue in ``config.models_dir``; tests pass their own.
    """

    def __init__(self, config: EngineConfig, *, registry: ModelRegistry | None = None) -> None:
        keep_freed_memory()  # the process reuses its image buffers (inference/memory.py)
        self.config = config
        self.registry = registry if registry is not None else ModelRegistry(config)
        self._lock = threading.RLock()
        self._detector: Detector | None = None
        self._swapper: Swapper | None = None
        self._recognizer: ArcFaceRecognizer | None = None
        self._enhancer: FaceEnhancer | None = None
        # Clients swap many targets with one source face: keep its analysis (by content
        # hash) so a repeat skips decoding and detecting it. Bounded LRU.
        self._sources: OrderedDict[tuple[bytes, str], _SourceEntry] = OrderedDict()

    # -- models, loaded on first use ---------------------------------------------------

    def _session(self, name: str) -> Any:
        """The model's session, once its file is checked (presence, licence, hash) and
        its interface is the catalogue's (ModelInvalid otherwise)."""
        session = get_session(self.registry.path(name), self.config)
        check_interface(self.registry.spec(name), session)
        return session

    @property
    def detector(self) -> Detector:
        with self._lock:
            if self._detector is None:
                self._detector = self._load_detector()
            return self._detector

    def _load_detector(self) -> Detector:
        name = self.config.detector
        try:
            session = self._session(name)
        except ModelNotInstalled:
            if name == "yunet":
                raise
            # YuNet ships with the product (MIT): a missing optional detector degrades
            # gracefully instead of failing every request.
            log.warning("face detector %s is not installed; using yunet", name)
            name, session = "yunet", self._session("yunet")
        threshold = self.config.detection_score_threshold
        if name.startswith("scrfd"):
            return ScrfdDetector(session, score_threshold=threshold)
        return YuNetDetector(
            session, score_threshold=threshold, input_size=self.config.detector_input_size
        )

    @property
    def swapper(self) -> Swapper:
        with self._lock:
            if self._swapper is None:
                self._swapper = self._load_swapper()
            return self._swapper

    def _load_swapper(self) -> Swapper:
        name = self.config.swapper
        if name == "classic":
            return ClassicSwapper()
        if name == "inswapper_128":
            session = self._session(name)  # licence refusal and absence surface here
            recognizer = self._require_recognizer()
            emap = load_emap(self.registry.path(name))
            if emap.shape != (512, 512):
                raise ModelInvalid(
                    f"inswapper_128's last initializer is {emap.shape}, not its 512x512 emap",
                    model=name,
                )
            return InswapperSwapper(session, emap, recognizer)
        raise ModelNotInstalled(f"unknown swapper {name!r}; use classic or inswapper_128")

    def _require_recognizer(self) -> ArcFaceRecognizer:
        with self._lock:
            if self._recognizer is None:
                self._recognizer = ArcFaceRecognizer(self._session(RECOGNIZER))
            return self._recognizer

    def _optional_recognizer(self) -> ArcFaceRecognizer | None:
        if self._recognizer is None and not (
            self.registry.installed(RECOGNIZER) and self.registry.allowed(RECOGNIZER)
        ):
            return None
        return self._require_recognizer()

    def _require_enhancer(self) -> FaceEnhancer:
        """The face enhancer a request with ``enhance`` asked (and pays) for. Not installed,
        it is ModelNotInstalled like any other model: the job fails and its Tokens go back,
        rather than a result delivered without what was paid for."""
        with self._lock:
            if self._enhancer is None:
                session = self._session(self.config.enhancer)
                self._enhancer = FaceEnhancer(session, strength=self.config.enhancer_strength)
            return self._enhancer

    # -- source faces ------------------------------------------------------------------

    def _source_entry(self, data: bytes, timer: _Timer) -> tuple[_SourceEntry, DecodedImage | None]:
        key = (hashlib.sha256(data).digest(), self.swapper.name)
        with self._lock:
            entry = self._sources.get(key)
            if entry is not None:
                self._sources.move_to_end(key)
                return entry, None
        with timer.stage("decode"):
            image = decode_image(data, self.config)
        with timer.stage("detect"):
            faces = usable_faces(
                self.detector.detect(image.bgr), self.config.min_face_size, "source"
            )
        entry = _SourceEntry(faces=faces)
        with self._lock:
            self._sources[key] = entry
            while len(self._sources) > max(0, self.config.source_cache_size):
                self._sources.popitem(last=False)
        return entry, image

    def _prepare_sources(
        self,
        entry: _SourceEntry,
        indices: list[int],
        data: bytes,
        image: DecodedImage | None,
        timer: _Timer,
    ) -> dict[int, SourceFace]:
        missing = [i for i in indices if i not in entry.prepared]
        if missing:
            if image is None:  # cached analysis, but this face was never prepared
                with timer.stage("decode"):
                    image = decode_image(data, self.config)
            with timer.stage("swap"):
                for i in missing:
                    entry.prepared[i] = self.swapper.prepare_source(image.bgr, entry.faces[i])
        return {i: entry.prepared[i] for i in indices}

    # -- public API --------------------------------------------------------------------

    def analyse(self, image_bytes: bytes) -> list[Face]:
        """The faces ``swap_image`` would index (left to right, at least ``min_face_size``),
        with ArcFace embeddings when the recognizer is installed. Empty when none."""
        image = decode_image(image_bytes, self.config)
        faces = [f for f in self.detector.detect(image.bgr) if f.size >= self.config.min_face_size]
        recognizer = self._optional_recognizer()
        if recognizer is not None:
            for face in faces:
                face.embedding = recognizer.embed(image.bgr, face)
        return faces

    def swap_image(
        self,
        source: bytes,
        target: bytes,
        *,
        faces: FaceSpec = "largest",
        output_format: str = "jpg",
        enhance: bool = False,
        watermark: bool = True,
    ) -> ImageResult:
        """Put the source's face onto the target's face(s) and encode the result.

        Raises the typed errors of inference.errors: ImageDecodeFailed,
        UnsupportedMediaType, ImagePixelExceed, NoFaceDetected, FaceSizeTooSmall,
        InvalidFaceMapping, ModelNotInstalled (also for ``enhance`` without an enhancer),
        ModelLicenceRefused, ModelInvalid.
        """
        fmt = normalise_format(output_format)
        spec = parse_face_spec(faces)  # a malformed mapping fails before any decoding
        swapper = self.swapper
        enhancer = self._require_enhancer() if enhance else None  # before any work
        timer = _Timer()

        entry, source_image = self._source_entry(source, timer)
        indices = source_indices(entry.faces, spec)
        with timer.stage("decode"):
            decoded = decode_image(target, self.config)
        with timer.stage("detect"):
            targets = usable_faces(
                self.detector.detect(decoded.bgr), self.config.min_face_size, "target"
            )
        pairs = select_pairs(entry.faces, targets, spec)
        prepared = self._prepare_sources(entry, indices, source, source_image, timer)

        frame = decoded.bgr
        swapped: list[Face] = []
        for source_index, target_index in pairs:
            with timer.stage("swap"):
                patch = swapper.render(frame, targets[target_index], prepared[source_index])
            if patch is None:
                continue
            with timer.stage("blend"):
                blend(frame, patch)
            swapped.append(targets[target_index])

        enhance_applied = False
        if enhancer is not None and swapped:
            with timer.stage("enhance"):
                for face in swapped:
                    enhancer.enhance(frame, face)
                enhance_applied = True

        with timer.stage("encode"):
            alpha = decoded.alpha
            if watermark and self.config.label_enabled:
                roi = draw_label(frame, self.config.label_text, self.config.label_position)
                if alpha is not None and not roi.empty:
                    # Opaque under the label: where the target was transparent, the
                    # disclosure would otherwise be drawn and then hidden.
                    alpha = alpha.copy()
                    alpha[roi.slices] = 255
            data = encode_tagged(frame, fmt, self.config.metadata_tag, alpha=alpha, icc=decoded.icc)
        return ImageResult(
            data=data,
            mime=MIME_TYPES[fmt],
            width=decoded.width,
            height=decoded.height,
            faces_swapped=len(swapped),
            enhance_applied=enhance_applied,
            timings=timer.timings,
        )

    def frame_swapper(
        self,
        source: bytes,
        *,
        faces: FaceSpec = "largest",
        enhance: bool = False,
        watermark: bool = True,
    ) -> FrameSwapper:
        """A per-video swapper: the source is analysed once, here.

        Raises for a bad source (decode errors, NoFaceDetected, FaceSizeTooSmall) or a
        mapping that names a missing source face; target faces that a frame lacks are
        simply not swapped in that frame.
        """
        spec = parse_face_spec(faces)
        timer = _Timer()
        entry, image = self._source_entry(source, timer)
        prepared = self._prepare_sources(
            entry, source_indices(entry.faces, spec), source, image, timer
        )
        enhancer = self._require_enhancer() if enhance else None
        return FrameSwapper(
            self, entry.faces, prepared, spec, enhancer=enhancer, watermark=watermark
        )
