"""Face detection, landmarks, embeddings and the source->target face selection rules."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from inference.config import EngineConfig
from inference.errors import FaceSizeTooSmall, InvalidFaceMapping, NoFaceDetected
from inference.faces import (
    ArcFaceRecognizer,
    Face,
    ScrfdDetector,
    YuNetDetector,
    select_pairs,
    usable_faces,
)
from inference.runtime import get_session
from tests.inference.conftest import MODELS_DIR, YUNET_FILE, face_image, make_arcface

FACE_BOX_720P = np.array([581, 59, 747, 271])  # obama-720p.jpg, measured by eye and YuNet


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def yunet(config: EngineConfig) -> YuNetDetector:
    return YuNetDetector(get_session(MODELS_DIR / YUNET_FILE, config))


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("obama.jpg", 1),
        ("biden.jpg", 1),
        ("two_people.jpg", 2),
        ("32bit.png", 1),
        ("obama-720p.jpg", 1),
        ("obama_small.jpg", 1),
    ],
)
def test_yunet_finds_every_face_in_the_sample_photos(
    yunet: YuNetDetector, name: str, count: int
) -> None:
    faces = yunet.detect(face_image(name))
    assert len(faces) == count
    assert all(0.6 <= f.score <= 1.0 for f in faces)


def test_boxes_come_back_in_original_image_coordinates(yunet: YuNetDetector) -> None:
    image = face_image("obama-720p.jpg")
    [face] = yunet.detect(image)
    assert iou(face.box, FACE_BOX_720P) > 0.85
    # The same photo at twice the size: the letterbox scale must be undone exactly.
    [big] = yunet.detect(cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR))
    assert iou(big.box / 2, face.box) > 0.9
    assert np.abs(big.landmarks / 2 - face.landmarks).max() < 6


def test_the_dynamic_yunet_export_finds_the_same_face(config: EngineConfig) -> None:
    dynamic = YuNetDetector(
        get_session(MODELS_DIR / "face_detection_yunet_2023mar_dynamic.onnx", config),
        input_size=480,
    )
    assert dynamic.fixed is None
    [face] = dynamic.detect(face_image("obama-720p.jpg"))
    assert iou(face.box, FACE_BOX_720P) > 0.85


def test_landmarks_are_right_eye_left_eye_nose_and_mouth_corners(yunet: YuNetDetector) -> None:
    [face] = yunet.detect(face_image("obama.jpg"))
    right_eye, left_eye, nose, mouth_right, mouth_left = face.landmarks
    # The subject's right eye is on the image's left.
    assert right_eye[0] < nose[0] < left_eye[0]
    assert mouth_right[0] < nose[0] < mouth_left[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(mouth_right[1], mouth_left[1])
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_faces_are_indexed_left_to_right(yunet: YuNetDetector) -> None:
    image = face_image("two_people.jpg")
    faces = yunet.detect(image)
    assert faces[0].center[0] < faces[1].center[0]
    # Mirror the photo: the same two faces, still numbered from the left.
    mirrored = yunet.detect(cv2.flip(image, 1))
    width = image.shape[1]
    assert mirrored[0].center[0] < mirrored[1].center[0]
    assert abs(mirrored[0].center[0] - (width - faces[1].center[0])) < 10


def test_a_picture_without_people_has_no_faces(yunet: YuNetDetector) -> None:
    assert yunet.detect(np.full((480, 640, 3), 127, np.uint8)) == []


class StubSession:
    """Plays back fixed outputs with an SCRFD-shaped interface (batchless, 9 outputs)."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs = outputs
        self.fed: dict[str, np.ndarray] = {}

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="input.1", shape=[1, 3, 640, 640])]

    def run(self, _names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.fed = feed
        return self.outputs


def test_scrfd_decoding_places_boxes_and_landmarks_from_anchor_distances() -> None:
    outputs = []
    for width in (1, 4, 10):
        for stride in (8, 16, 32):
            n = (640 // stride) ** 2 * 2
            outputs.append(np.zeros((n, width), np.float32))
    # Stride 16, cell (x=10, y=5), second anchor: centre (160, 80).
    index = (5 * 40 + 10) * 2 + 1
    outputs[1][index, 0] = 0.9
    outputs[4][index] = [2.0, 3.0, 4.0, 5.0]  # left, top, right, bottom in strides
    outputs[7][index] = np.arange(10, dtype=np.float32) / 16.0  # offsets in strides
    session = StubSession(outputs)
    detector = ScrfdDetector(session, score_threshold=0.5)

    image = np.zeros((1280, 640, 3), np.uint8)  # letterboxed at scale 0.5
    [face] = detector.detect(image)
    np.testing.assert_allclose(
        face.box, [(160 - 32) * 2, (80 - 48) * 2, (160 + 64) * 2, (80 + 80) * 2]
    )
    expected = (np.array([160.0, 80.0]) + np.arange(10).reshape(5, 2)) * 2
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-4)
    assert face.score == pytest.approx(0.9)
    blob = session.fed["input.1"]
    assert blob.shape == (1, 3, 640, 640)
    assert blob.min() == pytest.approx(-127.5 / 128)  # (0 - 127.5) / 128 in the padding


def test_arcface_embeddings_are_unit_length_512_vectors(
    tmp_path: Path, yunet: YuNetDetector, config: EngineConfig
) -> None:
    recognizer = ArcFaceRecognizer(get_session(make_arcface(tmp_path / "arc.onnx"), config))
    image = face_image("two_people.jpg")
    left, right = yunet.detect(image)
    a, b = recognizer.embed(image, left), recognizer.embed(image, right)
    assert a.shape == (512,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert float(a @ b) < 0.9999  # two people, two different vectors


def face_of_size(x: float, size: float) -> Face:
    box = np.array([x, 10, x + size, 10 + size], np.float32)
    return Face(box=box, landmarks=np.zeros((5, 2), np.float32), score=0.9)


def test_usable_faces_drops_small_faces_and_names_the_problem() -> None:
    big, small = face_of_size(0, 80), face_of_size(200, 10)
    assert usable_faces([big, small], min_face_size=24) == [big]
    with pytest.raises(FaceSizeTooSmall):
        usable_faces([small], min_face_size=24)
    with pytest.raises(NoFaceDetected):
        usable_faces([], min_face_size=24)


def test_largest_and_all_pick_the_largest_source_face() -> None:
    sources = [face_of_size(0, 40), face_of_size(100, 90), face_of_size(300, 50)]
    targets = [face_of_size(0, 30), face_of_size(100, 20), face_of_size(300, 60)]
    assert select_pairs(sources, targets, "largest") == [(1, 2)]
    assert select_pairs(sources, targets, "all") == [(1, 0), (1, 1), (1, 2)]


def test_explicit_pairs_accept_tuples_and_the_contract_dicts() -> None:
    sources = [face_of_size(0, 40), face_of_size(100, 40)]
    targets = [face_of_size(0, 40), face_of_size(100, 40)]
    assert select_pairs(sources, targets, [(1, 0), (0, 1)]) == [(1, 0), (0, 1)]
    assert select_pairs(sources, targets, [{"target_face": 1, "source_face": 1}]) == [(1, 1)]


@pytest.mark.parametrize(
    "spec",
    [
        [(0, 2)],  # no third target face
        [(1, 0)],  # no second source face
        [(0, -1)],
        [(0, 0), (0, 0)],  # the same target twice
        [(0, i) for i in range(7)],  # more than six pairs
        [],
        [("0", 0)],
        [(True, 0)],
        "biggest",
    ],
)
def test_bad_face_mappings_raise_invalid_face_mapping(spec: object) -> None:
    sources = [face_of_size(0, 40)]
    targets = [face_of_size(0, 40), face_of_size(100, 40)]
    with pytest.raises(InvalidFaceMapping):
        select_pairs(sources, targets, spec)  # type: ignore[arg-type]


def test_video_frames_drop_pairs_whose_target_face_is_missing() -> None:
    sources = [face_of_size(0, 40)]
    targets = [face_of_size(0, 40)]
    assert select_pairs(sources, targets, [(0, 0), (0, 3)], strict=False) == [(0, 0)]
    assert select_pairs(sources, [], "largest", strict=False) == []
