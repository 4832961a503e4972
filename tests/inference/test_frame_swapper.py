"""Engine.frame_swapper: per-video swapping with the source analysed once and target faces
tracked between detections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference.engine import Engine
from inference.errors import InvalidFaceMapping, NoFaceDetected
from inference.frame_swapper import FaceTracker
from inference.label import label_roi
from tests.inference.conftest import face_bytes, face_image, mean_abs_diff

FACE_BOX_720P = (581, 59, 747, 271)  # x1, y1, x2, y2 in obama-720p.jpg


def pan(frames: int, step: int = 3, x0: int = 300, size: tuple[int, int] = (640, 400)):
    """Frames of a camera panning across obama-720p, and each frame's window x."""
    still = face_image("obama-720p.jpg")
    w, h = size
    xs = [x0 + i * step for i in range(frames)]
    return [still[0:h, x : x + w].copy() for x in xs], xs


def face_slices(x: int) -> tuple[slice, slice]:
    x1, y1, x2, y2 = FACE_BOX_720P
    return slice(y1 + 40, y2 - 40), slice(x1 - x + 30, x2 - x - 30)


def test_every_frame_of_a_pan_gets_the_source_face(engine: Engine) -> None:
    frames, xs = pan(12)
    originals = [f.copy() for f in frames]
    swapper = engine.frame_swapper(face_bytes("biden.jpg"), watermark=False)
    out = swapper.process(frames[:6]) + swapper.process(frames[6:])
    assert len(out) == 12
    for frame, original, x in zip(out, originals, xs, strict=True):
        ys, xs_ = face_slices(x)
        assert mean_abs_diff(frame[ys, xs_], original[ys, xs_]) > 10
        assert frame.shape == original.shape and frame.dtype == np.uint8
    assert swapper.last_faces_swapped == [1] * 6
    assert swapper.faces_swapped_frames == 12
    # Neighbouring frames reuse the tracked face instead of running the detector.
    assert swapper.tracker.detections < 12


def test_tracked_landmarks_follow_the_face(engine: Engine) -> None:
    frames, xs = pan(5, step=4)
    tracker = FaceTracker(engine.detector, 24, redetect_every=10, max_shift=0.5)
    [first] = tracker.update(frames[0])
    for frame, x in zip(frames[1:], xs[1:], strict=True):
        [face] = tracker.update(frame)
        expected = first.landmarks - np.array([x - xs[0], 0], np.float32)
        assert np.abs(face.landmarks - expected).max() < 1.5
    assert tracker.detections == 1


def test_a_jump_larger_than_the_tracking_limit_runs_the_detector_again(engine: Engine) -> None:
    frames, _ = pan(2, step=60)
    tracker = FaceTracker(engine.detector, 24, redetect_every=10, max_shift=0.1)
    tracker.update(frames[0])
    tracker.update(frames[1])
    assert tracker.detections == 2


def test_frames_without_a_face_pass_through_unchanged(engine: Engine) -> None:
    empty = [np.full((240, 320, 3), 90, np.uint8) for _ in range(3)]
    plain = engine.frame_swapper(face_bytes("obama.jpg"), watermark=False)
    out = plain.process([f.copy() for f in empty])
    assert all(np.array_equal(a, b) for a, b in zip(out, empty, strict=True))
    assert plain.last_faces_swapped == [0, 0, 0] and plain.faces_swapped_frames == 0

    labelled = engine.frame_swapper(face_bytes("obama.jpg"))
    out = labelled.process([f.copy() for f in empty])
    roi, _, _ = label_roi(320, 240, engine.config.label_text, engine.config.label_position)
    rest = np.ones((240, 320), bool)
    rest[roi.slices] = False
    assert np.array_equal(out[0][rest], empty[0][rest])
    assert not np.array_equal(out[0][roi.slices], empty[0][roi.slices])


def test_an_explicit_mapping_to_a_face_absent_from_a_frame_is_not_an_error(
    engine: Engine,
) -> None:
    frames, _ = pan(2)
    swapper = engine.frame_swapper(face_bytes("obama.jpg"), faces=[(0, 0), (0, 1)], watermark=False)
    swapper.process(frames)
    assert swapper.last_faces_swapped == [1, 1]


def test_a_bad_source_fails_when_the_video_swapper_is_made(engine: Engine) -> None:
    blank = cv2.imencode(".png", np.full((200, 200, 3), 50, np.uint8))[1].tobytes()
    with pytest.raises(NoFaceDetected):
        engine.frame_swapper(blank)
    with pytest.raises(InvalidFaceMapping):
        engine.frame_swapper(face_bytes("obama.jpg"), faces=[(1, 0)])


def test_read_only_frames_are_copied_not_written(engine: Engine) -> None:
    frames, _ = pan(1)
    frozen = frames[0].copy()
    frozen.setflags(write=False)
    [out] = engine.frame_swapper(face_bytes("biden.jpg")).process([frozen])
    assert out is not frozen and np.array_equal(frozen, frames[0])
