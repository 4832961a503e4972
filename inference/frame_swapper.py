"""Swapping faces in a stream of video frames: the per-video FrameSwapper and its tracker.

The source face is analysed once (by ``Engine.frame_swapper``); target faces are followed
from frame to frame by optical flow, and the detector runs only when tracking is unsure.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import cv2
import numpy as np

from inference.enhancer import FaceEnhancer
from inference.faces import Detector, Face, select_pairs, sort_left_to_right
from inference.label import draw_label
from inference.swappers import SourceFace, blend

if TYPE_CHECKING:
    from inference.engine import Engine

LK_WINDOW = (21, 21)
LK_LEVELS = 3


class FaceTracker:
    """Target faces for consecutive video frames, detecting only when needed.

    Between detections the five landmarks of each face are followed by pyramidal
    Lucas-Kanade optical flow (checked forwards and backwards); the detector runs again
    every ``redetect_every`` frames, when a point is lost, or when a face moved more than
    ``max_shift`` of its size since it was detected.
    """

    def __init__(
        self, detector: Detector, min_face_size: float, redetect_every: int, max_shift: float
    ) -> None:
        self.detector = detector
        self.min_face_size = min_face_size
        self.redetect_every = max(1, redetect_every)
        self.max_shift = max_shift
        self.detections = 0
        self._faces: list[Face] = []
        self._anchors: list[Face] = []
        self._grey: np.ndarray | None = None
        self._age = 0

    def reset(self) -> None:
        self._grey, self._faces, self._anchors = None, [], []

    def update(self, frame: np.ndarray) -> list[Face]:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        faces: list[Face] | None = None
        if (
            self._faces
            and self._grey is not None
            and self._grey.shape == grey.shape
            and self._age < self.redetect_every - 1
        ):
            faces = self._track(grey)
        if faces is None:
            faces = [f for f in self.detector.detect(frame) if f.size >= self.min_face_size]
            self._anchors = faces
            self._age = 0
            self.detections += 1
        else:
            self._age += 1
        self._faces, self._grey = faces, grey
        return faces

    def _track(self, grey: np.ndarray) -> list[Face] | None:
        previous = self._grey
        assert previous is not None
        points = np.concatenate([f.landmarks for f in self._faces]).reshape(-1, 1, 2)
        # nextPts is an output here (no OPTFLOW_USE_INITIAL_FLOW): any same-shaped array.
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(
            previous, grey, points, points.copy(), winSize=LK_WINDOW, maxLevel=LK_LEVELS
        )
        if moved is None or not ok.all():
            return None
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(
            grey, previous, moved, moved.copy(), winSize=LK_WINDOW, maxLevel=LK_LEVELS
        )
        if back is None or not ok_back.all():
            return None
        round_trip = np.linalg.norm((back - points).reshape(-1, 5, 2), axis=2)
        tracked: list[Face] = []
        for i, (face, anchor) in enumerate(zip(self._faces, self._anchors, strict=True)):
            if round_trip[i].max() > max(1.0, 0.02 * face.size):
                return None  # the flow is unsure: ask the detector
            landmarks = moved[i * 5 : (i + 1) * 5].reshape(5, 2)
            shift = np.linalg.norm(landmarks.mean(axis=0) - anchor.landmarks.mean(axis=0))
            if shift > self.max_shift * anchor.size:
                return None
            # Move and scale the box with the landmarks' centroid and spread.
            old_c, new_c = face.landmarks.mean(axis=0), landmarks.mean(axis=0)
            old_s = np.linalg.norm(face.landmarks - old_c, axis=1).mean()
            new_s = np.linalg.norm(landmarks - new_c, axis=1).mean()
            ratio = float(new_s / old_s) if old_s > 0 else 1.0
            box = np.concatenate(
                [(face.box[:2] - old_c) * ratio + new_c, (face.box[2:] - old_c) * ratio + new_c]
            )
            tracked.append(
                Face(
                    box=box.astype(np.float32),
                    landmarks=landmarks.astype(np.float32),
                    score=face.score,
                )
            )
        order = sorted(range(len(tracked)), key=lambda k: tracked[k].center[0])
        self._anchors = [self._anchors[k] for k in order]
        return [tracked[k] for k in order]


class FrameSwapper:
    """Swaps faces in a stream of BGR frames for one video (one thread at a time).

    Frames without a usable face pass through unchanged (but labelled). After each
    ``process`` call, ``last_faces_swapped`` holds the faces swapped per frame;
    ``faces_swapped_frames`` counts frames with at least one swap so far.
    """

    def __init__(
        self,
        engine: Engine,
        source_faces: list[Face],
        sources: dict[int, SourceFace],
        spec: str | list[tuple[int, int]],
        *,
        enhancer: FaceEnhancer | None,
        watermark: bool,
    ) -> None:
        config = engine.config
        self.config = config
        self.swapper = engine.swapper
        self.source_faces = source_faces
        self.sources = sources
        self.spec = spec
        self.enhancer = enhancer
        self.enhance_applied = enhancer is not None
        self.watermark = watermark and config.label_enabled
        self.tracker = FaceTracker(
            engine.detector,
            config.min_face_size,
            config.video_redetect_every,
            config.video_track_max_shift,
        )
        self.frames_processed = 0
        self.faces_swapped_frames = 0
        self.last_faces_swapped: list[int] = []
        self.timings = dict.fromkeys(("detect", "swap", "blend", "enhance", "label"), 0.0)

    def _timed(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[stage] += now - start
        return now

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Swap faces in ``frames`` (modified in place when writable) and return them."""
        out: list[np.ndarray] = []
        counts: list[int] = []
        for frame in frames:
            if not frame.flags.writeable or not frame.flags.c_contiguous:
                frame = np.ascontiguousarray(frame).copy()
            counts.append(self._process_one(frame))
            out.append(frame)
        self.frames_processed += len(frames)
        self.faces_swapped_frames += sum(1 for n in counts if n)
        self.last_faces_swapped = counts
        return out

    def _process_one(self, frame: np.ndarray) -> int:
        start = time.perf_counter()
        targets = sort_left_to_right(self.tracker.update(frame))
        start = self._timed("detect", start)
        swapped: list[Face] = []
        for source_index, target_index in select_pairs(
            self.source_faces, targets, self.spec, strict=False
        ):
            patch = self.swapper.render(frame, targets[target_index], self.sources[source_index])
            start = self._timed("swap", start)
            if patch is not None:
                blend(frame, patch)
                swapped.append(targets[target_index])
            start = self._timed("blend", start)
        if self.enhancer is not None:
            for face in swapped:
                self.enhancer.enhance(frame, face)
            start = self._timed("enhance", start)
        if self.watermark:
            draw_label(frame, self.config.label_text, self.config.label_position)
            self._timed("label", start)
        return len(swapped)
