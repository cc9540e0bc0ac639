"""A fake expression engine for tests: no weights; a frame "has a face" when it is not dark
(mean > 40), and reads as happy when its left half is brighter than its right."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .base import EMOTIONS, ExpressionCapabilities, FrameMeasure, TimedFrame


class FakeExpression:
    name = "fake"
    capabilities = ExpressionCapabilities(needs_weights=False)

    def __init__(self, **_: object) -> None:
        pass

    def analyze(self, frames: Iterable[TimedFrame]) -> Iterator[FrameMeasure]:
        for f in frames:
            img = f.image
            if float(img.mean()) <= 40.0:
                yield FrameMeasure(t=f.t, full=f.full, face=False)
                continue
            if not f.full:
                yield FrameMeasure(t=f.t, full=False, face=True, eye_openness=0.3)
                continue
            w = img.shape[1] // 2
            happy = float(img[:, :w].mean()) > float(img[:, w:].mean())
            probs = [0.0] * len(EMOTIONS)
            probs[EMOTIONS.index("happy" if happy else "neutral")] = 1.0
            yield FrameMeasure(
                t=f.t,
                full=True,
                face=True,
                emotions=tuple(probs),
                yaw=0.0,
                pitch=0.0,
                roll=0.0,
                smile=1.0 if happy else 0.0,
                eye_openness=0.3,
            )
