"""Face swappers behind one interface: ``classic`` (no learned weights) and ``inswapper_128``.

A swapper renders a patch (the new face warped into a region of the target frame, with
its mask); ``blend`` composites it. Splitting the two keeps stage timings honest and lets
every swapper share the compositing code.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.align import (
    ARCFACE_112,
    ARCFACE_128,
    Roi,
    alpha_blend,
    box_mask,
    compose,
    invert,
    matrix_scale,
    roi_of_crop,
    similarity_transform,
    transform_points,
    warp_into_roi,
    warp_to_template,
)
from inference.faces import ArcFaceRecognizer, Face


@dataclass
class SourceFace:
    """What a swapper keeps of a source face between targets (and between video frames).

    ``crop`` and ``landmarks`` are the source image around the face and the landmarks in
    the crop's coordinates (classic); ``latent`` is the model-ready identity vector
    (learned swappers).
    """

    face: Face
    crop: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    latent: np.ndarray | None = None


@dataclass
class SwapPatch:
    """A rendered face in frame coordinates, ready to be blended.

    ``pixels`` (BGR uint8) and ``mask`` (float32 0..1) cover ``roi``. ``clone_mask``
    (uint8 0/255) asks ``blend`` for Poisson cloning inside it before the soft mask.
    """

    roi: Roi
    pixels: np.ndarray
    mask: np.ndarray
    clone_mask: np.ndarray | None = None


class Swapper(ABC):
    """Turns a source face into a patch over each target face."""

    name: str

    @abstractmethod
    def prepare_source(self, image: np.ndarray, face: Face) -> SourceFace:
        """Precompute what the swapper needs of a source face (done once per source)."""

    @abstractmethod
    def render(self, frame: np.ndarray, target: Face, source: SourceFace) -> SwapPatch | None:
        """Render ``source`` over ``target`` in ``frame``; None when nothing lands in it."""


def blend(frame: np.ndarray, patch: SwapPatch, clone_mode: int = cv2.NORMAL_CLONE) -> None:
    """Composite ``patch`` onto ``frame`` in place, touching only ``patch.roi``."""
    region = frame[patch.roi.slices]
    pixels = patch.pixels
    if patch.clone_mask is not None and cv2.countNonZero(patch.clone_mask) > 0:
        pixels = poisson_clone(pixels, region, patch.clone_mask, clone_mode)
    region[:] = alpha_blend(region, pixels, patch.mask)


# Poisson cloning costs O(n log n) in the masked area; above this many pixels it is solved
# at a lower resolution. The correction it adds to the source is smooth (harmonic) inside
# the mask, so upsampling it loses nothing a viewer could see.
POISSON_MAX_PIXELS = 200 * 200


def poisson_clone(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, mode: int) -> np.ndarray:
    """``cv2.seamlessClone`` of same-sized ``src`` into ``dst``, kept in place."""
    x, y, w, h = cv2.boundingRect(mask)
    if w < 3 or h < 3:
        return src
    scale = min(1.0, math.sqrt(POISSON_MAX_PIXELS / (w * h)))
    if scale >= 0.999:
        return _clone_same_size(src, dst, mask, mode)
    small = (max(3, round(dst.shape[1] * scale)), max(3, round(dst.shape[0] * scale)))
    src_s = cv2.resize(src, small, interpolation=cv2.INTER_AREA)
    dst_s = cv2.resize(dst, small, interpolation=cv2.INTER_AREA)
    mask_s = cv2.resize(mask, small, interpolation=cv2.INTER_NEAREST)
    cloned_s = _clone_same_size(src_s, dst_s, mask_s, mode)
    correction_s = cloned_s.astype(np.float32) - src_s.astype(np.float32)
    size = (dst.shape[1], dst.shape[0])
    correction = cv2.resize(correction_s, size, interpolation=cv2.INTER_LINEAR)
    return np.clip(src.astype(np.float32) + correction + 0.5, 0, 255).astype(np.uint8)


def _clone_same_size(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, mode: int) -> np.ndarray:
    x, y, w, h = cv2.boundingRect(mask)
    if w < 3 or h < 3:
        return src
    # seamlessClone centres the mask's bounding box on this point: put it back where it is.
    centre = (x + w // 2, y + h // 2)
    try:
        return cv2.seamlessClone(src, dst, mask, centre, mode)
    except cv2.error:
        return src  # degenerate masks at the frame edge: fall back to the soft mask alone


# The face region of the classic swap, in ArcFace-112 template coordinates: brows to chin,
# cheek to cheek, leaving the hairline and the jaw's outline to the target.
FACE_ELLIPSE_CENTRE = (56.0, 72.0)
FACE_ELLIPSE_AXES = (36.0, 45.0)
# How far outside the ellipse the working region reaches, in template units: room for the
# Poisson boundary and the feather.
ROI_MARGIN = 14.0
YAW_SHRINK = 2.0


class ClassicSwapper(Swapper):
    """Swap without learned weights: similarity-align the source face to the target's five
    landmarks, match its colour to the target's skin in LAB, Poisson-clone it in and
    feather the edge. The face keeps the source's features in the target's pose and light.

    All the work happens in a region around the target face, never on the whole frame.
    """

    name = "classic"

    def __init__(self, clone_mode: int = cv2.NORMAL_CLONE) -> None:
        self.clone_mode = clone_mode

    def prepare_source(self, image: np.ndarray, face: Face) -> SourceFace:
        to_template = similarity_transform(face.landmarks, ARCFACE_112)
        roi = _ellipse_roi(invert(to_template), image.shape, ROI_MARGIN * 1.5)
        crop = np.ascontiguousarray(image[roi.slices])
        landmarks = face.landmarks - np.array([roi.x0, roi.y0], dtype=np.float32)
        return SourceFace(face=face, crop=crop, landmarks=landmarks)

    def render(self, frame: np.ndarray, target: Face, source: SourceFace) -> SwapPatch | None:
        assert source.crop is not None and source.landmarks is not None
        target_to_template = similarity_transform(target.landmarks, ARCFACE_112)
        template_to_frame = invert(target_to_template)
        roi = _ellipse_roi(template_to_frame, frame.shape, ROI_MARGIN)
        if roi.width < 8 or roi.height < 8:
            return None

        crop, crop_landmarks = source.crop, source.landmarks
        source_to_template = similarity_transform(crop_landmarks, ARCFACE_112)
        source_to_frame = compose(template_to_frame, source_to_template)
        scale = matrix_scale(source_to_frame)
        if scale < 0.75:
            # Shrinking a lot with a bilinear warp aliases (jagged eyelashes, moire on
            # stubble): pre-shrink with area averaging, then warp at about 1:1.
            factor = min(1.0, scale * 1.25)
            crop = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            crop_landmarks = crop_landmarks * factor
            source_to_frame = compose(
                template_to_frame, similarity_transform(crop_landmarks, ARCFACE_112)
            )
        frame_to_source = invert(source_to_frame)
        shifted = frame_to_source.astype(np.float64).copy()
        shifted[:, 2] += shifted[:, :2] @ np.array([roi.x0, roi.y0], dtype=np.float64)
        warped = cv2.warpAffine(
            crop,
            shifted,
            (roi.width, roi.height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )

        face_scale = matrix_scale(template_to_frame)
        left, right = _visible_half_widths(
            transform_points(target_to_template, target.landmarks),
            transform_points(source_to_template, source.landmarks),
        )
        ay = FACE_ELLIPSE_AXES[1]
        hard = _face_mask(template_to_frame, roi, left, right, ay)
        # Colour statistics from well inside the face: skin, not hair or background.
        inner = _face_mask(template_to_frame, roi, left * 0.8, right * 0.8, ay * 0.8)
        target_region = frame[roi.slices]
        warped = match_colour_lab(warped, target_region, inner)

        # The feather fades inside the Poisson region so the seam is soft on both sides.
        feather_px = max(1.0, 6.0 * face_scale)
        shrunk = _face_mask(template_to_frame, roi, left - 4.0, right - 4.0, ay - 4.0)
        soft = cv2.GaussianBlur(shrunk.astype(np.float32) * (1.0 / 255.0), (0, 0), feather_px * 0.5)
        return SwapPatch(roi=roi, pixels=warped, mask=soft, clone_mask=hard)


def _ellipse_points(template_to_frame: np.ndarray, margin: float) -> np.ndarray:
    cx, cy = FACE_ELLIPSE_CENTRE
    ax, ay = FACE_ELLIPSE_AXES[0] + margin, FACE_ELLIPSE_AXES[1] + margin
    corners = np.array(
        [[cx - ax, cy - ay], [cx + ax, cy - ay], [cx - ax, cy + ay], [cx + ax, cy + ay]]
    )
    return transform_points(template_to_frame, corners)


def _ellipse_roi(template_to_frame: np.ndarray, shape: tuple[int, ...], margin: float) -> Roi:
    points = _ellipse_points(template_to_frame, margin)
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    h, w = shape[:2]
    return Roi(max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1)))


def _visible_half_widths(*template_landmarks: np.ndarray) -> tuple[float, float]:
    """Half-widths (image-left, image-right) of the face ellipse both faces can fill.

    A face turned sideways shows its far cheek compressed, with background where the
    ellipse expects skin; its nose moves toward that side. Each template unit the nose
    sits off the eyes' midline takes two off that side, for the source and the target.
    """
    left = right = FACE_ELLIPSE_AXES[0]
    for points in template_landmarks:
        offset = float(points[2, 0] - (points[0, 0] + points[1, 0]) / 2)
        if offset > 0:
            right = min(right, FACE_ELLIPSE_AXES[0] - YAW_SHRINK * offset)
        else:
            left = min(left, FACE_ELLIPSE_AXES[0] + YAW_SHRINK * offset)
    floor = FACE_ELLIPSE_AXES[0] * 0.55
    return max(left, floor), max(right, floor)


def _face_mask(
    template_to_frame: np.ndarray, roi: Roi, left: float, right: float, ay: float
) -> np.ndarray:
    """The face region drawn in ROI coordinates (uint8 0/255): two half-ellipses sharing
    the template's centre, ``left`` and ``right`` wide and ``ay`` tall (template units)."""
    scale = matrix_scale(template_to_frame)
    angle = math.degrees(math.atan2(template_to_frame[1, 0], template_to_frame[0, 0]))
    centre = transform_points(template_to_frame, np.array([FACE_ELLIPSE_CENTRE]))[0]
    mask = np.zeros((roi.height, roi.width), dtype=np.uint8)
    # Sub-pixel precision: cv2.ellipse takes integer coordinates with `shift` fraction bits.
    shift = 4
    k = 1 << shift
    c = (round((centre[0] - roi.x0) * k), round((centre[1] - roi.y0) * k))
    height = max(1, round(ay * scale * k))
    for half_width, start, end in ((right, -90, 90), (left, 90, 270)):
        axes = (max(1, round(half_width * scale * k)), height)
        cv2.ellipse(mask, c, axes, angle, start, end, 255, -1, cv2.LINE_8, shift)
    return mask


def match_colour_lab(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift ``source``'s LAB mean and spread inside ``mask`` to ``target``'s (Reinhard).

    The spread ratio is clamped so one odd channel (a grey photo, a red spotlight) cannot
    blow the face out.
    """
    if cv2.countNonZero(mask) < 16:
        return source
    src_lab = cv2.cvtColor(source, cv2.COLOR_BGR2LAB)
    dst_lab = cv2.cvtColor(target, cv2.COLOR_BGR2LAB)
    src_mean, src_std = cv2.meanStdDev(src_lab, mask=mask)
    dst_mean, dst_std = cv2.meanStdDev(dst_lab, mask=mask)
    gain = np.clip(dst_std.ravel() / np.maximum(src_std.ravel(), 1.0), 0.5, 2.0)
    offset = dst_mean.ravel() - src_mean.ravel() * gain
    # One multiply-add per channel through a lookup table: cheaper than float images.
    levels = np.arange(256, dtype=np.float32)
    lut = np.stack(
        [np.clip(levels * g + o + 0.5, 0, 255) for g, o in zip(gain, offset, strict=True)],
        axis=-1,
    ).astype(np.uint8)
    out = cv2.LUT(src_lab, lut.reshape(256, 1, 3))
    return cv2.cvtColor(out, cv2.COLOR_LAB2BGR)


# Process-wide: the emap is 1 MB read from a file of 500 MB; parse each model file once.
_EMAP_CACHE: dict[str, np.ndarray] = {}
_EMAP_CACHE_LOCK = threading.Lock()


def load_emap(path: Path) -> np.ndarray:
    """The inswapper's embedding map: the graph's last initializer (512x512)."""
    key = str(Path(path).resolve())
    with _EMAP_CACHE_LOCK:
        if key not in _EMAP_CACHE:
            import onnx  # only learned swappers need it
            from onnx import numpy_helper

            model = onnx.load(key, load_external_data=False)
            emap = numpy_helper.to_array(model.graph.initializer[-1]).astype(np.float32)
            _EMAP_CACHE[key] = emap
        return _EMAP_CACHE[key]


class InswapperSwapper(Swapper):
    """InsightFace inswapper_128 (FaceFusion's format): a 128 px face from an identity.

    Inputs ``target`` [1,3,128,128] RGB 0..1 (the target face on the 128 ArcFace template)
    and ``source`` [1,512] (ArcFace embedding through the model's emap); output the same
    face with the source's identity, pasted back through a blurred box mask.
    """

    name = "inswapper_128"

    def __init__(self, session: Any, emap: np.ndarray, recognizer: ArcFaceRecognizer) -> None:
        self.session = session
        self.emap = emap
        self.recognizer = recognizer
        inputs = {i.name: i for i in session.get_inputs()}
        self.target_name = "target" if "target" in inputs else session.get_inputs()[0].name
        self.source_name = "source" if "source" in inputs else session.get_inputs()[1].name
        side = inputs[self.target_name].shape[2]
        self.size = int(side) if isinstance(side, int) else 128
        self.template = ARCFACE_128 * (self.size / 128.0)
        self.mask = box_mask((self.size, self.size), blur=0.3, padding=0.0)

    def prepare_source(self, image: np.ndarray, face: Face) -> SourceFace:
        embedding = face.embedding
        if embedding is None:
            embedding = self.recognizer.embed(image, face)
        latent = embedding.reshape(1, -1) @ self.emap
        latent /= max(float(np.linalg.norm(latent)), 1e-12)
        return SourceFace(face=face, latent=latent.astype(np.float32))

    def render(self, frame: np.ndarray, target: Face, source: SourceFace) -> SwapPatch | None:
        assert source.latent is not None
        crop, matrix = warp_to_template(frame, target.landmarks, self.template, self.size)
        blob = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)
        blob = blob[None] * (1.0 / 255.0)
        out = self.session.run(None, {self.target_name: blob, self.source_name: source.latent})
        face = np.clip(out[0][0].transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        face = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
        roi = roi_of_crop(invert(matrix), (self.size, self.size), frame.shape)
        if roi.empty:
            return None
        pixels = warp_into_roi(face, matrix, roi)
        mask = np.clip(warp_into_roi(self.mask, matrix, roi), 0.0, 1.0)
        return SwapPatch(roi=roi, pixels=pixels, mask=mask)
