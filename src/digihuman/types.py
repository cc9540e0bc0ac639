"""Frozen dataclasses shared by every layer.

Data flows one way as typed chunks with an explicit end marker (:class:`SegmentEnd`).
Arrays inside frozen dataclasses are treated as read-only by convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SAMPLE_RATE = 16_000
"""The internal audio rate: every engine consumes 16 kHz mono float32 in [-1, 1]."""


@dataclass(frozen=True)
class AudioChunk:
    """A piece of mono float32 audio in [-1, 1]."""

    samples: np.ndarray  # shape (n,), float32
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass(frozen=True)
class SegmentEnd:
    """End of an audio segment (an utterance or a whole file): flush everything pending."""

    reason: str = "end"


@dataclass(frozen=True)
class VideoFrame:
    """One RGB frame of output video."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    index: int  # frame index within the generated stream (0-based)
    fps: float = 25.0
    speaking: bool = True  # False for idle/silent frames

    @property
    def pts(self) -> float:
        return self.index / self.fps


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned box in pixel coordinates (x0, y0) inclusive, (x1, y1) exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass(frozen=True)
class Landmarks:
    """Dense face landmarks in image pixel coordinates.

    ``points`` is (N, 2) float32 (x, y); ``scheme`` names the point definition
    ("mediapipe468" for the MediaPipe face mesh). ``box`` is the bounding box of the points
    (consistent for stills and tracked frames); ``box.score`` is the detector's score where the
    face was detected, the face-presence probability on tracked frames, and 0 on frames where
    the face was lost (the nearest tracked landmarks are held).
    """

    points: np.ndarray
    box: FaceBox
    scheme: str = "mediapipe468"
    z: np.ndarray | None = None  # (N,) relative depth, when the model gives it


@dataclass(frozen=True)
class LipSyncCapabilities:
    """What a lip-sync engine declares about itself."""

    fps: float = 25.0
    needs_weights: bool = False
    device: str = "cpu"
    streaming: bool = True  # accepts audio in chunks (realtime mode)
    lookahead_s: float = 0.0  # audio needed past a frame's time before it can be produced
    input_kinds: tuple[str, ...] = ("image", "video")


@dataclass(frozen=True)
class TTSCapabilities:
    sample_rate: int
    languages: tuple[str, ...]
    voices: tuple[str, ...] = ()
    streaming: bool = True
    needs_network: bool = False
    voice_cloning: bool = False


@dataclass(frozen=True)
class ASRCapabilities:
    languages: tuple[str, ...]
    needs_network: bool = False
    timestamps: bool = True
    word_timestamps: bool = False  # transcribe(..., word_timestamps=True) fills segment words


@dataclass(frozen=True)
class TranscriptWord:
    """One recognised word (a Chinese character or a few, as the engine splits them)."""

    start: float
    end: float
    text: str
    probability: float | None = None


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str
    words: tuple[TranscriptWord, ...] = ()  # only when asked for and the engine can


@dataclass(frozen=True)
class Transcript:
    """An ASR result; carries the options that made it."""

    text: str
    language: str
    segments: tuple[TranscriptSegment, ...] = ()
    duration: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


SourceKind = Literal["image", "video", "images"]
