"""The MediaPipe face mesh model (468 points) and its region of interest.

Facts used (from MediaPipe's face_landmark graphs): the model takes a 192x192 RGB crop scaled
to [0, 1], cut from the image along a square, rotated region of interest (ROI) in which the
eye line is horizontal; it returns 468 (x, y, z) points in crop pixels and a face-presence
logit. The ROI comes either from a detection (box centre, rotation from the two eye
keypoints, side = 1.5 x the longer box side) or from the previous frame's landmarks (the
mesh's extent in the eye-aligned frame, rotation from the eye corners 33 and 263, x 1.5).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from digihuman.face import models
from digihuman.face.detector import KP_LEFT_EYE, KP_RIGHT_EYE, Detection

INPUT = 192
ROI_SCALE = 1.5
N_POINTS = 468
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # the subject's right / left eye outer corners


@dataclass(frozen=True)
class Roi:
    """A square region: centre (cx, cy) and side in image pixels; ``angle`` (radians) is the
    angle of the face's eye line in the image (y down), so the crop rotates by -angle."""

    cx: float
    cy: float
    size: float
    angle: float

    def crop_matrix(self, out: int = INPUT) -> np.ndarray:
        """2x3 affine: image pixel centres -> crop pixel centres."""
        s = out / self.size
        c, si = math.cos(-self.angle) * s, math.sin(-self.angle) * s
        half = out / 2 - 0.5
        return np.array(
            [
                [c, -si, half - (c * self.cx - si * self.cy)],
                [si, c, half - (si * self.cx + c * self.cy)],
            ],
            np.float64,
        )

    def corners(self) -> np.ndarray:
        """The 4 corners (4, 2) in image pixels."""
        h = self.size / 2
        c, s = math.cos(self.angle), math.sin(self.angle)
        local = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        rot = np.array([[c, -s], [s, c]])
        return np.asarray(local @ rot.T + [self.cx, self.cy])


def roi_from_detection(det: Detection, scale: float = ROI_SCALE) -> Roi:
    d = det.keypoints[KP_LEFT_EYE] - det.keypoints[KP_RIGHT_EYE]
    angle = math.atan2(float(d[1]), float(d[0]))
    cx, cy = det.center
    return Roi(float(cx), float(cy), max(det.width, det.height) * scale, angle)


def roi_from_points(points: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """ROI around mesh points: the eye-corner line sets the angle, the points' extent in the
    rotated frame sets centre and side."""
    d = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]
    angle = math.atan2(float(d[1]), float(d[0]))
    c, s = math.cos(angle), math.sin(angle)
    # coordinates along (eye line, perpendicular)
    u = points[:, 0] * c + points[:, 1] * s
    v = -points[:, 0] * s + points[:, 1] * c
    um, vm = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    side = max(float(u.max() - u.min()), float(v.max() - v.min())) * scale
    return Roi(float(um * c - vm * s), float(um * s + vm * c), side, angle)


def crop(image: np.ndarray, roi: Roi, out: int = INPUT) -> tuple[np.ndarray, np.ndarray]:
    """The ROI cut out as an (out, out, 3) image and the 2x3 image->crop matrix.

    Large ROIs are first shrunk with area averaging so the bilinear warp does not alias.
    """
    m = roi.crop_matrix(out)
    shrink = roi.size / out
    if shrink > 2.0:
        corners = roi.corners()
        h, w = image.shape[:2]
        x0 = int(max(0, math.floor(corners[:, 0].min()) - 2))
        y0 = int(max(0, math.floor(corners[:, 1].min()) - 2))
        x1 = int(min(w, math.ceil(corners[:, 0].max()) + 3))
        y1 = int(min(h, math.ceil(corners[:, 1].max()) + 3))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            f = 2.0 / shrink  # shrink to twice the crop resolution
            part = image[y0:y1, x0:x1]
            pw, ph = max(1, round(part.shape[1] * f)), max(1, round(part.shape[0] * f))
            small = cv2.resize(part, (pw, ph), interpolation=cv2.INTER_AREA)
            fx, fy = pw / part.shape[1], ph / part.shape[0]
            # small pixel centre p' = (p - origin + 0.5) * f - 0.5  ->  fold into m
            pre = np.array(
                [[fx, 0, (0.5 - x0) * fx - 0.5], [0, fy, (0.5 - y0) * fy - 0.5], [0, 0, 1]]
            )
            m_small = m @ np.linalg.inv(pre)
            patch = cv2.warpAffine(
                small,
                m_small[:2],
                (out, out),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            return patch, m
    patch = cv2.warpAffine(
        image, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return patch, m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
    return np.asarray(np.linalg.inv(full)[:2])


@dataclass(frozen=True)
class MeshResult:
    points: np.ndarray  # (468, 2) image pixels
    z: np.ndarray  # (468,) depth in image pixels (smaller = closer to the camera)
    presence: float  # face presence probability in [0, 1]
    roi: Roi


class FaceMesh:
    """The 468-point face landmark model."""

    def __init__(
        self, *, models_dir: str | os.PathLike[str] | None = None, num_threads: int = 1
    ) -> None:
        self._interp: Any = models.load_interpreter(
            models.model_path(models.FACE_LANDMARK, models_dir), num_threads
        )
        self._input = self._interp.get_input_details()[0]["index"]
        outs = self._interp.get_output_details()
        by_width = {int(np.prod(o["shape"])): o["index"] for o in outs}
        self._mesh, self._flag = by_width[N_POINTS * 3], by_width[1]

    def run(self, image: np.ndarray, roi: Roi) -> MeshResult:
        patch, m = crop(image, roi)
        self._interp.set_tensor(self._input, (patch.astype(np.float32) / 255.0)[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._mesh).reshape(N_POINTS, 3)
        logit = float(self._interp.get_tensor(self._flag).reshape(-1)[0])
        presence = 1.0 / (1.0 + math.exp(-max(-80.0, min(80.0, logit))))
        inv = invert_affine(m)
        # model coordinates: 0..192 across the crop; pixel centres sit at +0.5
        xy = raw[:, :2].astype(np.float64) - 0.5
        pts = xy @ inv[:, :2].T + inv[:, 2]
        z = raw[:, 2] * (roi.size / INPUT)
        return MeshResult(pts.astype(np.float32), z.astype(np.float32), presence, roi)
