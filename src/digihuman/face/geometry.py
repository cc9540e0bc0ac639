"""Geometry on the MediaPipe 468-point face mesh: index groups, eye line, face-aligned
transforms and the iBUG 300-W 68-point equivalent.

Index groups follow MediaPipe's ``face_mesh_connections`` (rings listed in order around
the contour). "Right"/"left" are the *subject's*: the right eye is on the image's left in a
frontal photo. Image coordinates are pixels with y pointing down.

iBUG 68 from the mesh (:func:`to_68`)
-------------------------------------
The 68-point definition (300-W) marks the jaw line, brows, nose, eyes and lips with points
that are *evenly spaced along each contour between anatomical anchors*. The mesh has
vertices at most anchors, so every 68-point run below is made by taking a mesh contour
(a polyline of mesh indices) between two anchors and resampling it at equal arc length.
Points that fall on an anchor are exact mesh vertices; the others are interpolated.

======  =======================  =================================================  ========
68 idx  part                     mesh polyline (resampled to the run's point count)  exact?
======  =======================  =================================================  ========
0-16    jaw, right ear -> chin   127 234 93 132 58 172 136 150 149 176 148 152      0, 16 (8*)
        -> left ear (each half   377 400 378 379 365 397 288 361 323 454 356
        resampled on its own)
17-21   right brow, outer->inner 70 63 105 66 107 (upper brow edge)                 approx.
22-26   left brow, inner->outer  336 296 334 293 300                                approx.
27-30   nose bridge -> tip       168 6 197 195 5 4 1                                27, 30
31-35   nostrils, right->left    98 97 2 | 2 326 327                                31, 33, 35
36-41   right eye: outer corner, 33 (246 161 160 159 158 157 173) 133 (155 154     36, 39
        upper lid x2, inner       153 145 144 163 7)
        corner, lower lid x2
42-47   left eye, inner corner,  362 (398 384 385 386 387 388 466) 263 (249 390     42, 45
        upper x2, outer, lower   373 374 380 381 382)
48-59   outer lip ring from the  61 185 40 39 37 0 267 269 270 409 291 375 321      48, 51,
        right corner, upper lip  405 314 17 84 181 91 146                            54, 57
        first
60-67   inner lip ring           78 191 80 81 82 13 312 311 310 415 308 324 318      60, 62,
                                 402 317 14 87 178 88 95                             64, 66
======  =======================  =================================================  ========

(*) The lower jaw, points 6-10, is then pushed away from the nose tip (point 30) by up to 7 %
(``CHIN_PUSH``): the mesh's chin vertex 152 sits ~3 % of the face height above the 300-W chin,
measured against dlib's 68-point predictor on real photos (bench/crop_box.py); with the push
the MuseTalk crop box matches the official one at mean IoU 0.955 instead of 0.914.

Known approximations: the iBUG jaw starts at the top of the ear attachment, where the mesh
has no vertex; we start at 127/356 (the face oval at the level of the eyes), so points 0 and
16 may sit a few pixels higher or more inward than a human annotator would put them. The mesh
brows follow the upper edge of the brow while iBUG annotators mark its middle to upper edge
(a few pixels). iBUG inner mouth corners 60/64 coincide with the outer corners when the
mouth is closed; the mesh's 78/308 sit a little inside them.
"""

from __future__ import annotations

import math

import numpy as np

from digihuman.face.landmarks import invert_affine
from digihuman.types import Landmarks

# ----------------------------------------------------------------------------- index groups

# fmt: off
LIPS_OUTER = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)
"""Outer lip contour, a ring starting at the right mouth corner, lower lip first."""
LIPS_INNER = (
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
)
"""Inner lip contour (the mouth opening), a ring starting at the right inner corner."""
UPPER_LIP_OUTER_MID = 0
LOWER_LIP_OUTER_MID = 17
UPPER_LIP_INNER_MID = 13
LOWER_LIP_INNER_MID = 14
MOUTH_CORNERS = (61, 291)
MOUTH_INNER_CORNERS = (78, 308)
UPPER_LIP = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 308, 415, 310, 311, 312, 13, 82, 81, 80,
    191, 78,
)
"""Upper lip as a closed polygon (outer edge right->left, then inner edge back)."""
LOWER_LIP = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 308, 324, 318, 402, 317, 14, 87, 178, 88,
    95, 78,
)
"""Lower lip as a closed polygon."""

FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
"""Face outline ring from the top of the forehead (10), clockwise in the image."""
JAW = (
    127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
    361, 323, 454, 356,
)
# fmt: on
"""Lower face outline from the right side at eye level, over the chin (152), to the left."""
CHIN = 152
FOREHEAD = 10

RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
"""Right eye ring: outer corner 33, lower lid, inner corner 133, upper lid."""
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
"""Left eye ring: outer corner 263, lower lid, inner corner 362, upper lid."""
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (263, 362)  # outer, inner
RIGHT_EYE_LIDS = (159, 145)  # upper and lower lid middles
LEFT_EYE_LIDS = (386, 374)
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)

RIGHT_EYEBROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
"""Right brow ring: upper edge outer->inner, then lower edge inner->outer."""
LEFT_EYEBROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)

NOSE_BRIDGE = (168, 6, 197, 195, 5, 4, 1)
"""From between the eyes (168) down to the nose tip (1)."""
NOSE_TIP = 1
NOSE_BOTTOM = (98, 97, 2, 326, 327)
"""Under the nose from the right nostril wing (98) through the subnasale (2) to the left."""

# ----------------------------------------------------------------------------- basics


def _pts(lm: Landmarks | np.ndarray) -> np.ndarray:
    pts = lm.points if isinstance(lm, Landmarks) else np.asarray(lm)
    return np.asarray(pts, np.float64)[:, :2]


def eye_centers(lm: Landmarks | np.ndarray) -> np.ndarray:
    """(2, 2): centres of the subject's right eye (row 0) and left eye (row 1)."""
    p = _pts(lm)
    return np.stack([p[list(RIGHT_EYE)].mean(0), p[list(LEFT_EYE)].mean(0)])


def eye_line_angle(lm: Landmarks | np.ndarray) -> float:
    """Angle in degrees of the line from the right eye centre to the left eye centre, in image
    coordinates (y down): 0 for a level face, positive when the image-right eye is lower
    (the head turned clockwise on screen)."""
    r, left = eye_centers(lm)
    d = left - r
    return math.degrees(math.atan2(d[1], d[0]))


def interocular(lm: Landmarks | np.ndarray) -> float:
    """Distance between the eye centres in pixels (the face's scale)."""
    r, left = eye_centers(lm)
    return float(np.linalg.norm(left - r))


def mouth_center(lm: Landmarks | np.ndarray) -> np.ndarray:
    return np.asarray(_pts(lm)[list(LIPS_OUTER)].mean(0))


def mouth_opening(lm: Landmarks | np.ndarray) -> float:
    """Gap between the inner lip midpoints (13, 14) divided by the interocular distance:
    about 0 closed, 0.3-0.5 wide open."""
    p = _pts(lm)
    gap = float(np.linalg.norm(p[LOWER_LIP_INNER_MID] - p[UPPER_LIP_INNER_MID]))
    return gap / max(interocular(p), 1e-6)


def mouth_width(lm: Landmarks | np.ndarray) -> float:
    """Distance between the mouth corners (61, 291) divided by the interocular distance."""
    p = _pts(lm)
    return float(np.linalg.norm(p[291] - p[61])) / max(interocular(p), 1e-6)


def eye_openness(lm: Landmarks | np.ndarray) -> tuple[float, float]:
    """Eye aspect ratios (right, left): lid gap (159-145, 386-374) over the corner-to-corner
    width; about 0.25-0.35 open, below ~0.1 closed (a blink)."""
    p = _pts(lm)

    def ratio(lids: tuple[int, int], corners: tuple[int, int]) -> float:
        gap = float(np.linalg.norm(p[lids[0]] - p[lids[1]]))
        return gap / max(float(np.linalg.norm(p[corners[0]] - p[corners[1]])), 1e-6)

    return ratio(RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS), ratio(LEFT_EYE_LIDS, LEFT_EYE_CORNERS)


def bbox(points: np.ndarray) -> tuple[float, float, float, float]:
    """Axis-aligned (x0, y0, x1, y1) of points."""
    p = np.asarray(points)[:, :2]
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


# ----------------------------------------------------------------------------- transforms


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    p = np.asarray(points, np.float64)[:, :2]
    m = np.asarray(m, np.float64)
    return np.asarray((p @ m[:, :2].T + m[:, 2]).astype(np.float32))


def aligned_transform(
    lm: Landmarks | np.ndarray,
    out_size: int | tuple[int, int],
    *,
    face_fraction: float = 0.75,
    center_y: float = 0.5,
) -> np.ndarray:
    """2x3 similarity mapping the image to a face-aligned crop of ``out_size`` (side, or
    (width, height)): eye line horizontal, the face (the mesh's extent in the eye-aligned
    frame) centred horizontally, its vertical centre at ``center_y`` of the height, and its
    larger side spanning ``face_fraction`` of the crop's smaller side.

    Use with ``cv2.warpAffine(image, m, (w, h))``; map back with :func:`invert_transform`.
    """
    w, h = (out_size, out_size) if isinstance(out_size, int) else out_size
    p = _pts(lm)
    a = math.radians(eye_line_angle(p))
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, s], [-s, c]])  # rotates by -a: eye line -> horizontal
    q = p @ rot.T
    x0, y0 = q.min(0)
    x1, y1 = q.max(0)
    extent = max(x1 - x0, y1 - y0, 1e-6)
    k = face_fraction * min(w, h) / extent
    m = np.zeros((2, 3))
    m[:, :2] = k * rot
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    m[0, 2] = (w - 1) / 2 - k * cx
    m[1, 2] = center_y * h - 0.5 - k * cy
    return m


def invert_transform(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (aligned crop -> image)."""
    return invert_affine(m)


# ----------------------------------------------------------------------------- iBUG 68


def resample_polyline(points: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along an open polyline (ends included)."""
    p = np.asarray(points, np.float64)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] <= 0:
        return np.repeat(p[:1], n, axis=0)
    t = np.linspace(0.0, cum[-1], n)
    return np.stack([np.interp(t, cum, p[:, 0]), np.interp(t, cum, p[:, 1])], axis=1)


def _arc(p: np.ndarray, idx: tuple[int, ...], n: int) -> np.ndarray:
    """Resample the mesh polyline ``idx`` to n points, ends included."""
    return resample_polyline(p[list(idx)], n)


CHIN_PUSH = np.array([0.3, 0.7, 1.0, 0.7, 0.3], dtype=np.float32) * 0.07


def to_68(lm: Landmarks | np.ndarray) -> np.ndarray:
    """The iBUG 300-W 68-point layout (68, 2) float32 derived from the 468-point mesh
    (see the module docstring for the table and its approximations)."""
    p = _pts(lm)
    if p.shape[0] < 468:
        raise ValueError(f"to_68 needs the 468-point mesh, got {p.shape[0]} points")
    # jaw: each half from the ear-level end to the chin, so 0, 8 and 16 are mesh vertices
    chin = JAW.index(CHIN)
    jaw = np.concatenate([_arc(p, JAW[: chin + 1], 9), _arc(p, JAW[chin:], 9)[1:]])
    right_brow = _arc(p, (70, 63, 105, 66, 107), 5)
    left_brow = _arc(p, (336, 296, 334, 293, 300), 5)
    bridge = _arc(p, NOSE_BRIDGE, 4)
    # under the nose: each half to the subnasale (2), so 31, 33 and 35 are mesh vertices
    nostrils = np.concatenate([_arc(p, (98, 97, 2), 3), _arc(p, (2, 326, 327), 3)[1:]])
    parts = [jaw, right_brow, left_brow, bridge, nostrils]
    # eyes: corners exact, two lid points each at 1/3 and 2/3 of the lid's arc
    r_up = _arc(p, RIGHT_EYE_UPPER, 4)  # 33 .. 133
    r_lo = _arc(p, RIGHT_EYE_LOWER, 4)
    right_eye = np.stack([r_up[0], r_up[1], r_up[2], r_up[3], r_lo[2], r_lo[1]])
    l_up = _arc(p, LEFT_EYE_UPPER[::-1], 4)  # 362 .. 263
    l_lo = _arc(p, LEFT_EYE_LOWER[::-1], 4)
    left_eye = np.stack([l_up[0], l_up[1], l_up[2], l_up[3], l_lo[2], l_lo[1]])
    # outer lips: 48 right corner, 49-50 upper, 51 upper middle, 52-53, 54 left corner,
    # 55-56 lower, 57 lower middle, 58-59
    up_r = _arc(p, (61, 185, 40, 39, 37, 0), 4)
    up_l = _arc(p, (0, 267, 269, 270, 409, 291), 4)
    lo_l = _arc(p, (291, 375, 321, 405, 314, 17), 4)
    lo_r = _arc(p, (17, 84, 181, 91, 146, 61), 4)
    outer = np.concatenate([up_r, up_l[1:], lo_l[1:], lo_r[1:3]])
    # inner lips: 60 right corner, 61, 62 upper middle, 63, 64 left corner, 65, 66, 67
    iu_r = _arc(p, (78, 191, 80, 81, 82, 13), 3)
    iu_l = _arc(p, (13, 312, 311, 310, 415, 308), 3)
    il_l = _arc(p, (308, 324, 318, 402, 317, 14), 3)
    il_r = _arc(p, (14, 87, 178, 88, 95, 78), 3)
    inner = np.concatenate([iu_r, iu_l[1:], il_l[1:], il_r[1:2]])
    out = np.concatenate([*parts, right_eye, left_eye, outer, inner])
    assert out.shape == (68, 2)
    # The mesh's chin vertex sits ~3 % of the face height above the 300-W chin point (measured
    # against dlib's 68-point predictor in bench/crop_box.py, 4 subjects): push the lower jaw
    # (points 6-10) away from the nose tip (30) by up to 7 %, which removes that bias.
    out[6:11] = out[30] + (out[6:11] - out[30]) * (1.0 + CHIN_PUSH[:, None])
    return out.astype(np.float32)
