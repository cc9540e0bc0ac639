"""Blend masks from landmarks: filled polygons and feathered edges.

``polygon_mask`` gives a hard uint8 mask (0/255); ``feather`` turns a hard mask into float32
weights in [0, 1]. The region masks (:func:`mouth_region_mask`, :func:`lower_face_mask`)
return feathered float32 masks whose weight falls to 0 *at the polygon's edge*, so blending
with them never changes a pixel outside the polygon.
"""

from __future__ import annotations

import cv2
import numpy as np

from digihuman.face import geometry as g
from digihuman.types import Landmarks

_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices


def polygon_mask(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A (H, W) uint8 mask, 255 inside the polygon ``points`` (N, 2) and 0 outside
    (``shape`` may be an image's shape; only H, W are used)."""
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), np.uint8)
    pts = np.asarray(points, np.float64)[:, :2]
    if len(pts) < 3:
        return mask
    fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    # LINE_AA leaves partial edge pixels; a hard mask is either in or out
    return np.where(mask >= 128, 255, 0).astype(np.uint8)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t), np.float32)


def feather(mask: np.ndarray, radius: float, *, inside: bool = True) -> np.ndarray:
    """Soft float32 weights in [0, 1] from a hard mask.

    ``inside=True`` (default): weight rises from 0 at the mask's edge to 1 at ``radius``
    pixels inside it (a smoothstep of the distance to the edge), so nothing outside the mask
    is touched. ``inside=False``: a Gaussian blur with sigma = radius / 2, centred on the
    edge (weights spill ``radius`` pixels outside).
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if radius <= 0:
        return m.astype(np.float32)
    if inside:
        dist = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return _smoothstep(dist / float(radius))
    sigma = max(radius / 2.0, 0.1)
    k = int(2 * round(3 * sigma) + 1)
    blurred = cv2.GaussianBlur(m.astype(np.float32), (k, k), sigma)
    return np.clip(blurred, 0.0, 1.0).astype(np.float32)


def _scaled(points: np.ndarray, sx: float, sy: float, angle_deg: float) -> np.ndarray:
    """Scale points about their centroid along the face's own axes (eye line, vertical)."""
    c = points.mean(0)
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    local = (points - c) @ rot  # into the face frame
    local *= [sx, sy]
    return np.asarray(local @ rot.T + c)


def mouth_region_mask(
    lm: Landmarks | np.ndarray,
    shape: tuple[int, ...],
    feather_px: float = 8.0,
    *,
    scale_x: float = 1.3,
    scale_y: float = 1.6,
) -> np.ndarray:
    """Feathered (H, W) float32 mask around the lips: the outer lip ring enlarged about its
    centre (``scale_x`` along the eye line, ``scale_y`` across it)."""
    p = np.asarray(lm.points if isinstance(lm, Landmarks) else lm, np.float64)[:, :2]
    ring = _scaled(p[list(g.LIPS_OUTER)], scale_x, scale_y, g.eye_line_angle(p))
    return feather(polygon_mask(ring, shape), feather_px)


# fmt: off
LOWER_FACE_POLYGON = (
    93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323,
    327, 2, 98,
)
# fmt: on
"""Jaw line from the right cheek (93) over the chin to the left cheek (323), closed along
the bottom of the nose (327, 2, 98): the part of the face that moves when speaking."""


def lower_face_mask(
    lm: Landmarks | np.ndarray,
    shape: tuple[int, ...],
    feather_px: float = 12.0,
    *,
    chin_margin: float = 0.0,
) -> np.ndarray:
    """Feathered (H, W) float32 mask of the lower face (jaw, lips, chin; up to the nose).

    ``chin_margin`` (a fraction of the interocular distance) pushes the jaw line outward
    so a downward-warped jaw stays inside the mask.
    """
    p = np.asarray(lm.points if isinstance(lm, Landmarks) else lm, np.float64)[:, :2]
    poly = p[list(LOWER_FACE_POLYGON)].copy()
    if chin_margin:
        centre = p[list(g.LIPS_OUTER)].mean(0)
        jaw = slice(0, 19)
        d = poly[jaw] - centre
        norm = np.linalg.norm(d, axis=1, keepdims=True)
        poly[jaw] += d / np.maximum(norm, 1e-6) * chin_margin * g.interocular(p)
    return feather(polygon_mask(poly, shape), feather_px)
