"""Face alignment: five-point templates, similarity transforms, warps, masks and paste-back.

Landmark order everywhere: the subject's right eye (image left), left eye, nose tip, right
mouth corner, left mouth corner, the order of YuNet, SCRFD and the ArcFace template.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# InsightFace's ArcFace template for 112x112 crops.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
# InsightFace's estimate_norm for a 128 crop (inswapper_128): the 112 template shifted
# 8 px right, not scaled; FaceFusion's "arcface_128_v2" is the same points normalised.
ARCFACE_128 = ARCFACE_112 + np.array([8.0, 0.0], dtype=np.float32)
# FFHQ alignment used by GFPGAN and other 512 px face restorers.
FFHQ_512 = (
    np.array(
        [
            [0.37691676, 0.46864664],
            [0.62285697, 0.46912813],
            [0.50123859, 0.61331904],
            [0.39308822, 0.72541100],
            [0.61150205, 0.72490465],
        ],
        dtype=np.float32,
    )
    * 512.0
)


@dataclass(frozen=True)
class Roi:
    """An axis-aligned region of a frame, half-open: x0 <= x < x1, y0 <= y < y1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation+scale+translation that maps ``src`` points onto ``dst`` points.

    RANSAC with a huge threshold keeps all five points as inliers and refines on all of
    them, i.e. a least-squares fit (what FaceFusion does), with LMEDS as a fallback.
    """
    src = np.asarray(src, dtype=np.float32).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float32).reshape(-1, 2)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=100)
    if matrix is None:
        matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("cannot fit a similarity transform to degenerate landmarks")
    return matrix.astype(np.float32)


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix.astype(np.float64)).astype(np.float32)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 transform that applies ``inner`` then ``outer``."""
    a = np.vstack([outer, [0.0, 0.0, 1.0]])
    b = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (a @ b)[:2].astype(np.float32)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def matrix_scale(matrix: np.ndarray) -> float:
    """The uniform scale of a similarity transform."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def warp_to_template(
    image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int | tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the face aligned to ``template``; returns (crop, frame->crop matrix)."""
    width, height = (size, size) if isinstance(size, int) else size
    matrix = similarity_transform(landmarks, template)
    crop = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return crop, matrix


def roi_of_crop(
    crop_to_frame: np.ndarray,
    crop_size: tuple[int, int],
    frame_shape: tuple[int, ...],
    pad: int = 2,
) -> Roi:
    """The frame region that a warped crop (``crop_size`` = width, height) lands on."""
    w, h = crop_size
    corners = transform_points(crop_to_frame, np.array([[0, 0], [w, 0], [0, h], [w, h]]))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + pad
    fh, fw = frame_shape[:2]
    return Roi(max(0, int(x0)), max(0, int(y0)), min(fw, int(x1)), min(fh, int(y1)))


def warp_into_roi(
    crop: np.ndarray,
    frame_to_crop: np.ndarray,
    roi: Roi,
    *,
    interpolation: int = cv2.INTER_LINEAR,
    border_value: float = 0.0,
) -> np.ndarray:
    """Warp a crop back into frame coordinates, computing only the pixels of ``roi``."""
    # Shift the frame origin to the ROI's corner so warpAffine writes a ROI-sized image.
    shifted = frame_to_crop.astype(np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([roi.x0, roi.y0], dtype=np.float64)
    return cv2.warpAffine(
        crop,
        shifted,
        (roi.width, roi.height),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def box_mask(size: tuple[int, int], blur: float = 0.3, padding: float = 0.0) -> np.ndarray:
    """A float32 mask of a crop with soft edges (FaceFusion's static box mask).

    ``blur`` is the fraction of the half-width that fades out; ``padding`` the fraction cut
    off each side before the fade.
    """
    width, height = size
    blur_amount = int(width * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    pad_x, pad_y = int(width * padding), int(height * padding)
    mask: np.ndarray = np.ones((height, width), dtype=np.float32)
    mask[: max(blur_area, pad_y), :] = 0
    mask[-max(blur_area, pad_y) :, :] = 0
    mask[:, : max(blur_area, pad_x)] = 0
    mask[:, -max(blur_area, pad_x) :] = 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25)
    return mask


def alpha_blend(base: np.ndarray, top: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``base * (1 - alpha) + top * alpha`` for uint8 BGR images and a float HxW alpha."""
    a = alpha[:, :, None] if alpha.ndim == 2 else alpha
    out = base.astype(np.float32)
    out += (top.astype(np.float32) - out) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def paste_back(
    frame: np.ndarray, crop: np.ndarray, frame_to_crop: np.ndarray, crop_mask: np.ndarray
) -> Roi:
    """Warp ``crop`` back onto ``frame`` (in place) through ``crop_mask``; returns the ROI.

    Only the region the crop lands on is touched, which keeps paste-back cheap on large
    frames and leaves every other pixel byte-identical.
    """
    h, w = crop.shape[:2]
    roi = roi_of_crop(invert(frame_to_crop), (w, h), frame.shape)
    if roi.empty:
        return roi
    pixels = warp_into_roi(crop, frame_to_crop, roi)
    alpha = warp_into_roi(crop_mask.astype(np.float32), frame_to_crop, roi)
    region = frame[roi.slices]
    region[:] = alpha_blend(region, pixels, np.clip(alpha, 0.0, 1.0))
    return roi
