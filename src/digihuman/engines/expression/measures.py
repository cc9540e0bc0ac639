"""Per-frame measures from the 468-point mesh: head pose, smile geometry, and the upright
grayscale face crop the FER model reads (eye openness: :mod:`.eyes`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from digihuman.face import geometry as g

FOREHEAD, CHIN = 10, 152
PITCH_BIAS = 8.0
"""Degrees added to the raw pitch: the mesh's forehead-chin line leans back ~8 degrees on a
frontal face (measured: -3.5 to -11.6, mean -8, on the four bundled frontal portraits and their
mirror images)."""


def head_pose(points: np.ndarray, z: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the mesh's own 3D shape (x, y in pixels, z the
    model's relative depth in pixels; smaller z = closer).

    The face's axes: x from the right eye's outer corner to the left one's (the subject's
    right is the image's left), y from the chin up to the forehead, orthogonalised; the
    normal is their cross product. Frontal: all three near 0. Yaw > 0: the face turns towards
    the image's right; pitch > 0: the chin comes up; roll > 0: the head tilts clockwise in
    the image.
    """
    p = np.concatenate([points.astype(np.float64), z.astype(np.float64)[:, None]], axis=1)
    p[:, 1] *= -1.0  # y up
    p[:, 2] *= -1.0  # z towards the camera
    x = p[g.LEFT_EYE_CORNERS[0]] - p[g.RIGHT_EYE_CORNERS[0]]
    y = p[FOREHEAD] - p[CHIN]
    x /= max(np.linalg.norm(x), 1e-9)
    y -= x * float(x @ y)
    y /= max(np.linalg.norm(y), 1e-9)
    n = np.cross(x, y)  # points out of the face, towards the camera when frontal
    yaw = math.degrees(math.atan2(n[0], n[2]))
    pitch = math.degrees(math.atan2(n[1], math.hypot(n[0], n[2]))) + PITCH_BIAS
    roll = math.degrees(math.atan2(-x[1], x[0]))
    return yaw, pitch, roll


def smile_geometry(points: np.ndarray) -> float:
    """0..1 from the mouth's shape: corners raised above the lips' middle and a widened mouth,
    both relative to the inter-ocular distance, in the face's own upright frame."""
    e = g.interocular(points)
    if e <= 1e-6:
        return 0.0
    ang = math.radians(g.eye_line_angle(points))
    c, s = math.cos(-ang), math.sin(-ang)
    rot = np.array([[c, -s], [s, c]])
    q = (points.astype(np.float64) - points.mean(0)) @ rot.T / e
    corners = q[list(g.MOUTH_CORNERS)]
    mid_y = (q[g.UPPER_LIP_OUTER_MID, 1] + q[g.LOWER_LIP_OUTER_MID, 1]) / 2
    lift = mid_y - corners[:, 1].mean()  # > 0: corners above the middle (image y down)
    width = float(np.linalg.norm(corners[0] - corners[1]))
    lift_score = np.clip((lift + 0.02) / 0.12, 0.0, 1.0)
    width_score = np.clip((width - 0.80) / 0.30, 0.0, 1.0)
    return float(0.5 * lift_score + 0.5 * width_score)


def face_crop(gray: np.ndarray, points: np.ndarray, size: int = 64) -> np.ndarray:
    """An upright (eye line horizontal) square grayscale crop around the mesh, the face
    filling it as a detector box grown by ~10% does (what FER was trained on)."""
    ang = math.radians(g.eye_line_angle(points))
    c, s = math.cos(ang), math.sin(ang)
    centre = points.mean(0).astype(np.float64)
    q = (points - centre) @ np.array([[c, s], [-s, c]]).T  # points in the upright frame
    side = float(max(np.ptp(q[:, 0]), np.ptp(q[:, 1]))) * 1.1
    k = size / max(side, 1e-6)
    # image -> crop: rotate by -ang about the centre, scale, move the centre to the middle
    m = np.array([[c, s], [-s, c]]) * k
    t = np.array([size / 2 - 0.5, size / 2 - 0.5]) - m @ centre
    aff = np.concatenate([m, t[:, None]], axis=1)
    out: np.ndarray = cv2.warpAffine(
        gray, aff, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
    )
    return out
