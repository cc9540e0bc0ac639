"""The default expression engine: MediaPipe face tracking + mesh measures + the FER classifier.

Per frame (see :class:`~digihuman.engines.expression.base.TimedFrame`): find the face
(:class:`FaceTracker`), then on ``full`` frames the 7 expression probabilities
(:class:`FERClassifier` on an upright grayscale crop), head pose, smile intensity and eye
openness (:class:`EyeOpenness`, the eye-contour model); on the other frames eye openness
only (blinks), the eye crops placed where the last face mesh found the eyes (the mesh runs again
when the eye model finds the corners moved too far). Letting the crops follow the eye model's
own corners was tried: they drift during a blink, and closed eyes read 0.21-0.25 instead of
0.16. CPU only, ~1 MB of weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from digihuman.face import models as face_models

from .base import ExpressionCapabilities, FrameMeasure, TimedFrame
from .eyes import EyeOpenness, corners_from_mesh, plausible_step
from .fer_model import FERClassifier
from .measures import face_crop, head_pose, smile_geometry
from .tracker import FaceTracker

HAPPY = 3


class FERExpression:
    name = "fer"
    capabilities = ExpressionCapabilities()

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        face_models_dir: str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
        min_face_score: float = 0.5,
        min_presence: float = 0.5,
    ) -> None:
        threads = face_models.default_threads() if num_threads is None else num_threads
        self.tracker = FaceTracker(
            min_score=min_face_score,
            min_presence=min_presence,
            num_threads=threads,
            models_dir=face_models_dir,
        )
        self.classifier = FERClassifier(model=model, num_threads=1)
        self.eyes = EyeOpenness(models_dir=face_models_dir, num_threads=1)

    def analyze(self, frames: Iterable[TimedFrame]) -> Iterator[FrameMeasure]:
        self.tracker.reset()
        corners: np.ndarray | None = None  # the eyes' corners in the last face-mesh frame
        for f in frames:
            if not f.full and corners is not None:
                # eye-only frame: the eyes follow themselves (two 64x64 runs, no face mesh)
                eyes, seen = self.eyes(f.image, corners)
                if plausible_step(corners, seen):  # (the crops stay where the mesh put them)
                    yield FrameMeasure(t=f.t, full=False, face=True, eye_openness=round(eyes, 4))
                    continue
            r = self.tracker.find(f.image)
            if r is None:
                corners = None
                yield FrameMeasure(t=f.t, full=f.full, face=False)
                continue
            corners = corners_from_mesh(r.points)
            eyes, _ = self.eyes(f.image, corners)
            if not f.full:
                yield FrameMeasure(t=f.t, full=False, face=True, eye_openness=round(eyes, 4))
                continue
            gray = cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY)
            probs = self.classifier(face_crop(gray, r.points))
            yaw, pitch, roll = head_pose(r.points, r.z)
            # smile: the classifier's "happy" and the mouth's shape, equally
            smile = 0.5 * float(probs[HAPPY]) + 0.5 * smile_geometry(r.points)
            yield FrameMeasure(
                t=f.t,
                full=True,
                face=True,
                emotions=tuple(round(float(p), 4) for p in probs),
                yaw=round(yaw, 2),
                pitch=round(pitch, 2),
                roll=round(roll, 2),
                smile=round(smile, 4),
                eye_openness=round(eyes, 4),
            )
