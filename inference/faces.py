"""Face analysis: detection (YuNet, SCRFD), ArcFace embeddings and source->target selection.

Faces are indexed left to right by box centre, the order a user sees them in, so an
explicit mapping like ``[(0, 1)]`` means "my first face onto their second face".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import cv2
import numpy as np

from inference.align import ARCFACE_112, warp_to_template
from inference.errors import FaceSizeTooSmall, InvalidFaceMapping, NoFaceDetected

MAX_FACE_PAIRS = 6


@dataclass(eq=False)
class Face:
    """One detected face, in the coordinates of the image it was found in.

    ``landmarks`` is 5x2 float32: the subject's right eye (on the image's left), left eye,
    nose tip, right mouth corner, left mouth corner.
    """

    box: np.ndarray  # float32 [x1, y1, x2, y2]
    landmarks: np.ndarray
    score: float
    embedding: np.ndarray | None = None  # L2-normalised ArcFace vector, when one was computed

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """The shorter side of the box: what ``min_face_size`` is compared against."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box as x, y, width, height in pixels, landmarks as [x, y] pairs."""
        return {
            "box": [
                round(float(self.box[0]), 1),
                round(float(self.box[1]), 1),
                round(self.width, 1),
                round(self.height, 1),
            ],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
        }


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]: ...


def sort_left_to_right(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.center[0])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-6)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """Resize to fit ``width`` x ``height`` keeping the aspect ratio, pad right and bottom.

    Padding at the far edges keeps the inverse mapping a plain division by ``scale``.
    """
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, scale


def _faces_from_arrays(
    boxes: np.ndarray, landmarks: np.ndarray, scores: np.ndarray, scale: float, nms_iou: float
) -> list[Face]:
    if scores.size == 0:
        return []
    keep = nms(boxes, scores, nms_iou)
    boxes = boxes[keep] / scale
    landmarks = landmarks[keep] / scale
    faces = [
        Face(box=b.astype(np.float32), landmarks=k.reshape(5, 2).astype(np.float32), score=float(s))
        for b, k, s in zip(boxes, landmarks, scores[keep], strict=True)
    ]
    return sort_left_to_right(faces)


@lru_cache(maxsize=16)
def _grid(rows: int, cols: int, anchors: int) -> np.ndarray:
    """Cell (x, y) indices in row-major order, each repeated ``anchors`` times."""
    ys, xs = np.mgrid[:rows, :cols]
    cells = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)
    if anchors > 1:
        cells = np.repeat(cells, anchors, axis=0)
    cells.setflags(write=False)
    return cells


def _image_input(session: Any) -> tuple[str, tuple[int, int] | None]:
    """A detector's image input: its name and, when the export fixes it, its (w, h)."""
    model_input = session.get_inputs()[0]
    shape = model_input.shape
    fixed = isinstance(shape[2], int) and isinstance(shape[3], int)
    return model_input.name, (int(shape[3]), int(shape[2])) if fixed else None


class YuNetDetector:
    """OpenCV Zoo's YuNet run through ONNX Runtime (fixed 640x640 or the dynamic export).

    For the dynamic model the image is scaled so its long side is ``input_size`` and padded
    to multiples of 32, which skips the letterbox's dead area.
    """

    STRIDES = (8, 16, 32)

    def __init__(
        self,
        session: Any,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        input_size: int = 640,
        top_k: int = 5000,
    ) -> None:
        self.session = session
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.input_name, self.fixed = _image_input(session)
        self.input_size = input_size

    def _input_shape(self, width: int, height: int) -> tuple[int, int]:
        if self.fixed is not None:
            return self.fixed
        scale = self.input_size / max(width, height)
        w = int(np.ceil(width * scale / 32) * 32)
        h = int(np.ceil(height * scale / 32) * 32)
        return max(w, 32), max(h, 32)

    def detect(self, image: np.ndarray) -> list[Face]:
        in_w, in_h = self._input_shape(image.shape[1], image.shape[0])
        if self.fixed is None:
            # Scale by the long side only; the padding to a multiple of 32 is bottom/right.
            scale = self.input_size / max(image.shape[:2])
            new_w = max(1, round(image.shape[1] * scale))
            new_h = max(1, round(image.shape[0] * scale))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
            canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        else:
            canvas, scale = letterbox(image, in_w, in_h)
        blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)  # BGR, raw 0..255
        outputs = dict(
            zip(
                (o.name for o in self.session.get_outputs()),
                self.session.run(None, {self.input_name: blob}),
                strict=True,
            )
        )
        boxes, kps, scores = [], [], []
        for stride in self.STRIDES:
            cls = outputs[f"cls_{stride}"].reshape(-1)
            obj = outputs[f"obj_{stride}"].reshape(-1)
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            hits = np.nonzero(score >= self.score_threshold)[0]
            if hits.size == 0:
                continue
            cells = _grid(in_h // stride, in_w // stride, 1)[hits]
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[hits]
            centre = (bbox[:, :2] + cells) * stride
            size = np.exp(bbox[:, 2:4]) * stride
            boxes.append(np.hstack([centre - size / 2, centre + size / 2]))
            marks = outputs[f"kps_{stride}"].reshape(-1, 10)[hits].reshape(-1, 5, 2)
            kps.append(((marks + cells[:, None, :]) * stride).reshape(-1, 10))
            scores.append(score[hits])
        if not scores:
            return []
        all_scores = np.concatenate(scores)
        top = np.argsort(-all_scores)[: self.top_k]
        return _faces_from_arrays(
            np.vstack(boxes)[top], np.vstack(kps)[top], all_scores[top], scale, self.nms_threshold
        )


class ScrfdDetector:
    """InsightFace SCRFD (det_10g, det_2.5g): 640x640 RGB, (x - 127.5) / 128.

    Nine outputs: scores, box distances and landmark offsets for strides 8, 16, 32 with two
    anchors per cell. The export's output names are numbers, so they are grouped by shape.
    """

    STRIDES = (8, 16, 32)
    ANCHORS = 2

    def __init__(
        self,
        session: Any,
        *,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        input_size: int = 640,
    ) -> None:
        self.session = session
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.input_name, fixed = _image_input(session)
        self.size = fixed or (input_size, input_size)

    def detect(self, image: np.ndarray) -> list[Face]:
        in_w, in_h = self.size
        canvas, scale = letterbox(image, in_w, in_h)
        rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        blob = ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        raw = [o[0] if o.ndim == 3 else o for o in self.session.run(None, {self.input_name: blob})]
        by_width: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
        for out in raw:
            by_width.setdefault(out.shape[-1], []).append(out)
        boxes, kps, scores = [], [], []
        for level, stride in enumerate(self.STRIDES):
            # Levels come largest first (stride 8 has the most anchors).
            score = sorted(by_width[1], key=len, reverse=True)[level].reshape(-1)
            dist = sorted(by_width[4], key=len, reverse=True)[level] * stride
            marks = sorted(by_width[10], key=len, reverse=True)[level] * stride
            hits = np.nonzero(score >= self.score_threshold)[0]
            if hits.size == 0:
                continue
            anchors = len(score) // ((in_h // stride) * (in_w // stride))
            centres = _grid(in_h // stride, in_w // stride, anchors)[hits] * stride
            d = dist[hits]
            boxes.append(np.hstack([centres - d[:, :2], centres + d[:, 2:4]]))
            kps.append((marks[hits].reshape(-1, 5, 2) + centres[:, None, :]).reshape(-1, 10))
            scores.append(score[hits])
        if not scores:
            return []
        return _faces_from_arrays(
            np.vstack(boxes), np.vstack(kps), np.concatenate(scores), scale, self.nms_threshold
        )


class ArcFaceRecognizer:
    """ArcFace (w600k_r50 and kin): 112x112 aligned RGB, (x - 127.5) / 127.5 -> 512-d."""

    def __init__(self, session: Any) -> None:
        self.session = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        side = model_input.shape[2]
        self.size = int(side) if isinstance(side, int) else 112

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The L2-normalised embedding of ``face`` in ``image`` (BGR)."""
        template = ARCFACE_112 * (self.size / 112.0)
        crop, _ = warp_to_template(image, face.landmarks, template, self.size)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)
        blob = ((rgb - 127.5) / 127.5).transpose(2, 0, 1)[None]
        vector = self.session.run(None, {self.input_name: blob})[0].reshape(-1)
        return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def usable_faces(faces: list[Face], min_face_size: float, role: str = "target") -> list[Face]:
    """Drop faces too small to swap well; keep left-to-right order.

    Raises NoFaceDetected when there are none, FaceSizeTooSmall when all are too small.
    """
    if not faces:
        raise NoFaceDetected(f"no face was found in the {role} image", role=role)
    kept = [f for f in faces if f.size >= min_face_size]
    if not kept:
        largest = max(f.size for f in faces)
        raise FaceSizeTooSmall(
            f"the faces in the {role} image are at most {largest:.0f} px; "
            f"at least {min_face_size:.0f} px is needed",
            role=role,
            largest=round(largest, 1),
        )
    return kept


def largest_index(faces: Sequence[Face]) -> int:
    return max(range(len(faces)), key=lambda i: faces[i].area)


FaceSpec = str | Sequence[tuple[int, int]] | Sequence[Mapping[str, int]]


def _pair(item: object) -> tuple[int, int]:
    source: object
    target: object
    if isinstance(item, Mapping):
        source, target = item.get("source_face", 0), item.get("target_face")
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        source, target = item[0], item[1]
    else:
        raise InvalidFaceMapping(f"a face pair must be (source_face, target_face), got {item!r}")
    return _index(source, item), _index(target, item)


def _index(value: object, item: object) -> int:
    # bool is an int to Python, but `true` is no face index to a user.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidFaceMapping(f"face indices must be integers, got {item!r}")
    return int(value)


def parse_face_spec(spec: FaceSpec) -> str | list[tuple[int, int]]:
    """Check the shape of the ``faces`` field before any image is decoded.

    Returns "largest", "all" or a list of (source_face, target_face) pairs; raises
    InvalidFaceMapping for anything else, more than six pairs, or a target mapped twice.
    """
    if isinstance(spec, str):
        if spec in ("largest", "all"):
            return spec
        raise InvalidFaceMapping(f'faces must be "largest", "all" or a list of pairs, not {spec!r}')
    if not isinstance(spec, Sequence):
        raise InvalidFaceMapping(f'faces must be "largest", "all" or a list of pairs, not {spec!r}')
    pairs = [_pair(item) for item in spec]
    if not pairs:
        raise InvalidFaceMapping("the face mapping is empty")
    if len(pairs) > MAX_FACE_PAIRS:
        raise InvalidFaceMapping(f"at most {MAX_FACE_PAIRS} face pairs are allowed")
    targets = [target for _, target in pairs]
    if len(set(targets)) != len(targets):
        raise InvalidFaceMapping("a target_face is mapped more than once")
    if min(min(p) for p in pairs) < 0:
        raise InvalidFaceMapping("face indices start at 0")
    return pairs


def source_indices(source_faces: Sequence[Face], spec: FaceSpec) -> list[int]:
    """The source faces a spec uses; InvalidFaceMapping when one does not exist."""
    parsed = parse_face_spec(spec)
    if isinstance(parsed, str):
        return [largest_index(source_faces)]
    for source, _ in parsed:
        if source >= len(source_faces):
            raise InvalidFaceMapping(
                f"source_face {source} does not exist: the source image has "
                f"{len(source_faces)} face(s), numbered from 0 left to right",
                source_face=source,
                source_faces=len(source_faces),
            )
    return sorted({source for source, _ in parsed})


def select_pairs(
    source_faces: Sequence[Face],
    target_faces: Sequence[Face],
    spec: FaceSpec,
    *,
    strict: bool = True,
) -> list[tuple[int, int]]:
    """Resolve the contract's ``faces`` field into (source index, target index) pairs.

    "largest": the largest source face onto the largest target face; "all": the largest
    source face onto every target face; or up to six explicit pairs, tuples
    ``(source_face, target_face)`` or the contract's ``{"source_face", "target_face"}``.
    A target index that does not exist raises InvalidFaceMapping, or, with
    ``strict=False`` (video frames, where faces come and go), drops that pair.
    """
    parsed = parse_face_spec(spec)
    source_indices(source_faces, parsed)
    if not target_faces:
        return []
    if isinstance(parsed, str):
        largest = largest_index(source_faces)
        if parsed == "largest":
            return [(largest, largest_index(target_faces))]
        return [(largest, t) for t in range(len(target_faces))]  # "all"
    pairs: list[tuple[int, int]] = []
    for source, target in parsed:
        if target >= len(target_faces):
            if not strict:
                continue
            raise InvalidFaceMapping(
                f"target_face {target} does not exist: the target image has "
                f"{len(target_faces)} face(s), numbered from 0 left to right",
                target_face=target,
                target_faces=len(target_faces),
            )
        pairs.append((source, target))
    return pairs
