"""Follow one face through sampled frames with the MediaPipe models of :mod:`digihuman.face`.

Per frame: the face mesh on the last frame's landmark region (one 192x192 run); when the face
is not there (first frame, lost, or moved too far between samples), BlazeFace (short and full
range, whole image) and two mesh passes from the best detection. No smoothing: frames are
sampled sparsely, and blinks must not be smoothed away.
"""

from __future__ import annotations

import os

import numpy as np

from digihuman.face import detector as det_mod
from digihuman.face.detector import BlazeFace
from digihuman.face.landmarks import FaceMesh, MeshResult, Roi, roi_from_detection, roi_from_points


class FaceTracker:
    def __init__(
        self,
        *,
        min_score: float = 0.5,
        min_presence: float = 0.5,
        num_threads: int = 1,
        models_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.min_score = min_score
        self.min_presence = min_presence
        self._short = BlazeFace(det_mod.SHORT, models_dir=models_dir, num_threads=num_threads)
        self._full = BlazeFace(det_mod.FULL, models_dir=models_dir, num_threads=num_threads)
        self._mesh = FaceMesh(models_dir=models_dir, num_threads=num_threads)
        self._roi: Roi | None = None

    def reset(self) -> None:
        self._roi = None

    def find(self, image: np.ndarray) -> MeshResult | None:
        """The tracked face's mesh in ``image``, or None when there is no face."""
        if self._roi is not None:
            r = self._mesh.run(image, self._roi)
            if r.presence >= self.min_presence:
                self._roi = roi_from_points(r.points)
                return r
            self._roi = None
        dets = self._short.detect(image, self.min_score) + self._full.detect(image, self.min_score)
        if not dets:
            return None
        best = max(dets, key=lambda d: d.score * d.area)
        r = self._mesh.run(image, roi_from_detection(best))
        if r.presence < self.min_presence:
            return None
        r = self._mesh.run(image, roi_from_points(r.points))  # settle on the mesh's own region
        if r.presence < self.min_presence:
            return None
        self._roi = roi_from_points(r.points)
        return r
