"""Alignment maths: templates, similarity fits and paste-back that stays in its region."""

from __future__ import annotations

import math

import numpy as np

from inference.align import (
    ARCFACE_112,
    ARCFACE_128,
    FFHQ_512,
    box_mask,
    invert,
    paste_back,
    similarity_transform,
    transform_points,
    warp_to_template,
)


def test_templates_keep_the_landmark_order_and_the_inswapper_offset() -> None:
    for template in (ARCFACE_112, ARCFACE_128, FFHQ_512):
        right_eye, left_eye, nose, mouth_right, mouth_left = template
        assert right_eye[0] < nose[0] < left_eye[0]
        assert right_eye[1] < nose[1] < mouth_right[1]
    # InsightFace aligns 128 px crops by shifting the 112 template 8 px, not scaling it.
    np.testing.assert_allclose(ARCFACE_128 - ARCFACE_112, [[8, 0]] * 5)


def test_similarity_transform_recovers_rotation_scale_and_shift() -> None:
    angle, scale, shift = math.radians(20), 2.5, np.array([40.0, -12.0])
    rotation = scale * np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    moved = ARCFACE_112 @ rotation.T + shift
    matrix = similarity_transform(ARCFACE_112, moved)
    np.testing.assert_allclose(matrix[:, :2], rotation, atol=1e-3)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-2)
    np.testing.assert_allclose(transform_points(invert(matrix), moved), ARCFACE_112, atol=1e-3)


def test_warp_to_template_puts_the_landmarks_on_the_template() -> None:
    image = np.random.default_rng(1).integers(0, 255, (400, 500, 3), dtype=np.uint8)
    landmarks = ARCFACE_112 * 2.0 + np.array([150.0, 90.0])
    crop, matrix = warp_to_template(image, landmarks, ARCFACE_112, 112)
    assert crop.shape == (112, 112, 3)
    np.testing.assert_allclose(transform_points(matrix, landmarks), ARCFACE_112, atol=1e-3)


def test_paste_back_changes_only_the_region_the_crop_lands_on() -> None:
    frame = np.full((300, 400, 3), 10, np.uint8)
    landmarks = ARCFACE_112 + np.array([200.0, 100.0])  # a 1:1 crop at (200, 100)
    matrix = similarity_transform(landmarks, ARCFACE_112)
    white = np.full((112, 112, 3), 250, np.uint8)
    roi = paste_back(frame, white, matrix, box_mask((112, 112), blur=0.3))
    assert 195 <= roi.x0 <= 200 and 312 <= roi.x1 <= 317
    assert frame[156, 256].min() > 240  # the crop's centre is pasted at full strength
    outside = np.ones(frame.shape[:2], bool)
    outside[roi.slices] = False
    assert frame[outside].max() == 10
