"""Geometry and masks on the MediaPipe mesh: index groups, eye line, aligned crops, iBUG 68."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from digihuman.face import FaceAnalyzer
from digihuman.face import geometry as g
from digihuman.face.masks import (
    feather,
    lower_face_mask,
    mouth_region_mask,
    polygon_mask,
)

skdata = pytest.importorskip("skimage.data")

# iBUG 68 left/right mirror pairs (0-based)
IBUG_MIRROR = (
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(num_threads=1)


@pytest.fixture(scope="module")
def pts(analyzer: FaceAnalyzer, photo: np.ndarray) -> np.ndarray:
    return analyzer.analyze(photo).points


def test_index_groups_are_valid_rings() -> None:
    groups = {
        "LIPS_OUTER": (g.LIPS_OUTER, 20),
        "LIPS_INNER": (g.LIPS_INNER, 20),
        "FACE_OVAL": (g.FACE_OVAL, 36),
        "RIGHT_EYE": (g.RIGHT_EYE, 16),
        "LEFT_EYE": (g.LEFT_EYE, 16),
        "RIGHT_EYEBROW": (g.RIGHT_EYEBROW, 10),
        "LEFT_EYEBROW": (g.LEFT_EYEBROW, 10),
    }
    for name, (ring, n) in groups.items():
        assert len(ring) == n == len(set(ring)), name
        assert all(0 <= i < 468 for i in ring), name
    assert set(g.JAW) <= set(g.FACE_OVAL)
    assert g.MOUTH_CORNERS[0] in g.LIPS_OUTER and g.MOUTH_CORNERS[1] in g.LIPS_OUTER
    assert {g.UPPER_LIP_INNER_MID, g.LOWER_LIP_INNER_MID} <= set(g.LIPS_INNER)
    assert set(g.UPPER_LIP) | set(g.LOWER_LIP) == set(g.LIPS_OUTER) | set(g.LIPS_INNER)


def test_rings_are_in_order_on_a_real_face(pts: np.ndarray) -> None:
    # a ring listed in order gives a simple polygon: its area equals its convex-hull-ish
    # fill, and consecutive points are close (no jumps across the contour)
    for ring in (g.LIPS_OUTER, g.FACE_OVAL, g.RIGHT_EYE, g.LEFT_EYE):
        p = pts[list(ring)]
        step = np.linalg.norm(np.diff(np.vstack([p, p[:1]]), axis=0), axis=1)
        perimeter = step.sum()
        assert step.max() < 0.25 * perimeter
        area = cv2.contourArea(p.astype(np.float32))
        hull = cv2.contourArea(cv2.convexHull(p.astype(np.float32)))
        assert area > 0.85 * hull


def test_eye_line_angle_tracks_a_rotation(pts: np.ndarray) -> None:
    base = g.eye_line_angle(pts)
    for deg in (-30, -5, 10, 25):
        m = cv2.getRotationMatrix2D((200.0, 150.0), deg, 1.0)
        assert g.eye_line_angle(g.transform_points(pts, m)) == pytest.approx(base - deg, abs=1e-3)


@pytest.mark.parametrize("out_size", [256, (320, 400)])
def test_aligned_transform_levels_and_centres_the_face(
    pts: np.ndarray, out_size: int | tuple[int, int]
) -> None:
    rotated = g.transform_points(pts, cv2.getRotationMatrix2D((224.0, 130.0), 23, 1.3))
    m = g.aligned_transform(rotated, out_size, face_fraction=0.7)
    q = g.transform_points(rotated, m)
    w, h = (out_size, out_size) if isinstance(out_size, int) else out_size
    assert abs(g.eye_line_angle(q)) < 1e-3
    x0, y0, x1, y1 = g.bbox(q)
    assert (x0 + x1) / 2 == pytest.approx((w - 1) / 2, abs=0.01)
    assert (y0 + y1) / 2 == pytest.approx(h / 2 - 0.5, abs=0.01)
    assert max(x1 - x0, y1 - y0) == pytest.approx(0.7 * min(w, h), rel=1e-4)
    back = g.transform_points(q, g.invert_transform(m))
    np.testing.assert_allclose(back, rotated, atol=1e-3)


def test_aligned_crop_of_a_tilted_photo_matches_the_level_one(
    analyzer: FaceAnalyzer, photo: np.ndarray, pts: np.ndarray
) -> None:
    tilted = cv2.warpAffine(
        photo, cv2.getRotationMatrix2D((224, 130), 20, 1.0), (512, 512),
        borderMode=cv2.BORDER_REFLECT,
    )  # fmt: skip
    a = cv2.warpAffine(photo, g.aligned_transform(pts, 128), (128, 128))
    lm = analyzer.analyze(tilted)
    b = cv2.warpAffine(tilted, g.aligned_transform(lm, 128), (128, 128))
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 12


def test_to_68_anchor_points_are_mesh_vertices(pts: np.ndarray) -> None:
    p68 = g.to_68(pts)
    assert p68.shape == (68, 2) and p68.dtype == np.float32
    exact = {
        27: 168, 30: 1, 31: 98, 33: 2, 35: 327, 36: 33, 39: 133, 42: 362, 45: 263,
        48: 61, 51: 0, 54: 291, 57: 17, 60: 78, 62: 13, 64: 308, 66: 14,
    }  # fmt: skip
    for i68, i468 in exact.items():
        np.testing.assert_allclose(p68[i68], pts[i468], atol=1e-4, err_msg=str(i68))
    # the chin (8) is mesh vertex 152 pushed 7 % further from the nose tip (the 300-W chin)
    np.testing.assert_allclose(p68[8], pts[1] + (pts[152] - pts[1]) * 1.07, atol=1e-3)


def test_to_68_layout_is_anatomical(pts: np.ndarray) -> None:
    p = g.to_68(pts)
    # jaw runs from the image-left ear down to the chin (8, lowest) and up to the right
    assert np.all(np.diff(p[0:9, 1]) > 0) and np.all(np.diff(p[8:17, 1]) < 0)
    assert p[0, 0] < p[8, 0] < p[16, 0]
    # brows above eyes above nose tip above mouth above chin
    assert p[17:27, 1].max() < p[36:48, 1].min()
    assert p[36:48, 1].max() < p[30, 1] < p[48:68, 1].min() < p[8, 1]
    # the eyes: corners left to right, lids ordered
    assert p[36, 0] < p[37, 0] < p[38, 0] < p[39, 0] < p[42, 0] < p[43, 0] < p[44, 0] < p[45, 0]
    assert p[37, 1] < p[41, 1] and p[44, 1] < p[46, 1]
    # the nose bridge descends evenly
    assert np.all(np.diff(p[27:31, 1]) > 0)
    # upper outer lip above lower outer lip; inner lips inside the outer ring
    assert p[51, 1] < p[62, 1] < p[66, 1] < p[57, 1]
    # evenly spaced jaw points (arc-length resampling)
    steps = np.linalg.norm(np.diff(p[0:17], axis=0), axis=1)
    assert steps.max() < 1.6 * steps.min()


def test_to_68_of_a_mirrored_photo_mirrors(
    analyzer: FaceAnalyzer, photo: np.ndarray, pts: np.ndarray
) -> None:
    flipped = np.ascontiguousarray(photo[:, ::-1])
    p_flip = g.to_68(analyzer.analyze(flipped))
    w = photo.shape[1]
    mirrored = g.to_68(pts)[IBUG_MIRROR] * [-1, 1] + [w - 1, 0]
    err = np.linalg.norm(p_flip - mirrored, axis=1)
    # the table is left/right consistent: mirror image gives mirrored points (model noise
    # of a few pixels on a face ~95 px wide)
    assert err.mean() < 2.5, err.round(1)


def test_to_68_needs_the_mesh() -> None:
    with pytest.raises(ValueError, match="468-point mesh"):
        g.to_68(np.zeros((68, 2)))


def test_mouth_measures_move_with_the_lips(pts: np.ndarray) -> None:
    opened = pts.copy()
    lower = list(set(g.LOWER_LIP) - set(g.MOUTH_CORNERS) - {78, 308})
    opened[lower, 1] += 0.2 * g.interocular(pts)
    assert g.mouth_opening(opened) == pytest.approx(g.mouth_opening(pts) + 0.2, abs=1e-3)
    assert g.mouth_width(opened) == pytest.approx(g.mouth_width(pts))


def test_eye_openness(pts: np.ndarray) -> None:
    right, left = g.eye_openness(pts)
    assert 0.15 < right < 0.45 and 0.15 < left < 0.45  # her eyes are open
    closed = pts.copy()
    closed[g.RIGHT_EYE_LIDS[0]] = closed[g.RIGHT_EYE_LIDS[1]]
    assert g.eye_openness(closed)[0] == 0 and g.eye_openness(closed)[1] == left


# ---------------------------------------------------------------- masks


def test_polygon_mask_is_hard_and_exact() -> None:
    m = polygon_mask(np.array([[10, 10], [29, 10], [29, 19], [10, 19]]), (40, 50, 3))
    assert m.dtype == np.uint8 and m.shape == (40, 50)
    assert set(np.unique(m)) == {0, 255}
    assert (m > 0).sum() == 20 * 10
    assert polygon_mask(np.zeros((2, 2)), (5, 5)).sum() == 0


def test_feather_inside_never_leaves_the_polygon() -> None:
    m = np.zeros((100, 100), np.uint8)
    cv2.circle(m, (50, 50), 30, 255, -1)
    f = feather(m, 10)
    assert f.dtype == np.float32 and f.min() == 0 and f.max() == 1
    assert np.all(f[m == 0] == 0)
    assert f[50, 50] == 1 and f[50, 79] < 0.2 and 0.2 < f[50, 75] < 0.8
    row = f[50, 50:81]
    assert np.all(np.diff(row) <= 1e-6)  # falls off monotonically toward the edge
    soft = feather(m, 10, inside=False)
    assert soft[50, 82] > 0 and 0.4 < soft[50, 80] < 0.6
    np.testing.assert_array_equal(feather(m, 0), (m > 0).astype(np.float32))


def test_region_masks_cover_the_right_parts(pts: np.ndarray, photo: np.ndarray) -> None:
    mouth = mouth_region_mask(pts, photo.shape, 6)
    lower = lower_face_mask(pts, photo.shape, 10)
    for m in (mouth, lower):
        assert m.shape == photo.shape[:2] and m.dtype == np.float32
        assert m.min() >= 0 and m.max() <= 1
    centre = g.mouth_center(pts).round().astype(int)
    eyes = g.eye_centers(pts).round().astype(int)
    assert mouth[centre[1], centre[0]] == 1 and lower[centre[1], centre[0]] == 1
    for ex, ey in eyes:
        assert mouth[ey, ex] == 0 and lower[ey, ex] == 0
    # the mouth region covers every lip point, the lower face covers the mouth region
    lips = pts[list(g.LIPS_OUTER)].round().astype(int)
    assert np.all(mouth[lips[:, 1], lips[:, 0]] > 0)
    assert np.all(lower[mouth > 0.5] > 0)
    wider = lower_face_mask(pts, photo.shape, 10, chin_margin=0.2)
    assert (wider > 0).sum() > (lower > 0).sum()
    chin = pts[g.CHIN].round().astype(int)
    assert wider[chin[1] + 3, chin[0]] > 0
