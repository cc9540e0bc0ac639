"""One small contract per engine kind and a registry by name.

Engines are synchronous and stream by generator; asyncio lives only at the edges. Engines take
plain keyword arguments, never read the environment or settings files, and import nothing from
api, jobs or streaming. Capabilities are declared data (see :mod:`digihuman.types`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from digihuman.types import (
    ASRCapabilities,
    AudioChunk,
    LipSyncCapabilities,
    SegmentEnd,
    Transcript,
    TTSCapabilities,
    VideoFrame,
)

Progress = Callable[[float, str], None]
"""A progress callback: ``progress(fraction_done in [0, 1], message)``."""


def no_progress(fraction: float, message: str) -> None:  # pragma: no cover - trivial
    return None


# --------------------------------------------------------------------------------------------
# Lip-sync
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedAvatar:
    """What an engine prepared once for a source portrait or video.

    ``frames`` are the source frames (N, H, W, 3) uint8 RGB; ``arrays`` holds per-engine
    per-frame data (boxes, landmarks, masks, latents ...) as numpy arrays whose first axis is the
    frame index; ``meta`` is JSON-serialisable (engine, version, settings, source fingerprint)
    and is what the avatar store compares to detect a stale cache.
    """

    engine: str
    fps: float
    frames: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the source frames."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


AudioStream = Iterable[AudioChunk | SegmentEnd]
"""Audio arriving in chunks (16 kHz mono float32) with SegmentEnd after each utterance."""


@runtime_checkable
class LipSyncEngine(Protocol):
    """Portrait + speech → frames at ``capabilities.fps``.

    ``prepare`` runs once per source (it is cached by the avatar store); ``generate`` consumes
    audio chunks as they arrive and yields frames as soon as enough audio is known (at most
    ``capabilities.lookahead_s`` late). A ``SegmentEnd`` flushes the remaining frames of the
    segment (the last partial frame is padded with silence). For a whole file pass
    ``whole_audio(samples)``. ``start_frame`` continues the source-frame cycle across calls
    (live sessions). Exactly ``frame_count(len(segment), 16000, fps)`` frames are produced per
    segment.
    """

    name: str
    capabilities: LipSyncCapabilities

    def prepare(
        self, frames: np.ndarray, fps: float, *, progress: Progress = no_progress
    ) -> PreparedAvatar: ...

    def generate(
        self, prepared: PreparedAvatar, audio: AudioStream, *, start_frame: int = 0
    ) -> Iterator[VideoFrame]: ...

    def settings_fingerprint(self) -> dict[str, Any]:
        """The settings that change what ``prepare`` produces (stored in the manifest)."""
        ...


def whole_audio(samples: np.ndarray, sample_rate: int = 16_000) -> list[AudioChunk | SegmentEnd]:
    """A whole clip as an audio stream (normal mode)."""
    return [AudioChunk(np.asarray(samples, dtype=np.float32), sample_rate), SegmentEnd()]


# --------------------------------------------------------------------------------------------
# Speech
# --------------------------------------------------------------------------------------------


@runtime_checkable
class TTSEngine(Protocol):
    """Text → speech, streamed as audio chunks at ``capabilities.sample_rate``."""

    name: str
    capabilities: TTSCapabilities

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]: ...


@runtime_checkable
class ASREngine(Protocol):
    """Speech (16 kHz mono float32) → transcript with segments and detected language."""

    name: str
    capabilities: ASRCapabilities

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript: ...


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

T = TypeVar("T")


class Registry(Generic[T]):
    """Engines of one kind by name. Factories are imported lazily (nothing heavy at import)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T]) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, **kwargs: Any) -> T:
        from digihuman.errors import InputError

        try:
            factory = self._factories[name]
        except KeyError:
            raise InputError(
                f"unknown {self.kind} engine {name!r}; choose one of: {', '.join(self.names())}"
            ) from None
        return factory(**kwargs)


def lazy(module: str, attr: str) -> Callable[..., Any]:
    """A factory that imports ``module.attr`` only when called."""

    def factory(**kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attr)(**kwargs)

    return factory


LIPSYNC: Registry[LipSyncEngine] = Registry("lip-sync")
TTS: Registry[TTSEngine] = Registry("tts")
ASR: Registry[ASREngine] = Registry("asr")

# The built-in engines. Each module imports its heavy dependencies inside the class.
LIPSYNC.register("lite", lazy("digihuman.engines.lipsync.lite", "LiteEngine"))
LIPSYNC.register("musetalk", lazy("digihuman.engines.lipsync.musetalk.engine", "MuseTalkEngine"))
LIPSYNC.register("fake", lazy("digihuman.engines.lipsync.fake", "FakeLipSync"))
TTS.register("auto", lazy("digihuman.engines.tts.auto", "AutoTTS"))
TTS.register("kokoro", lazy("digihuman.engines.tts.kokoro", "KokoroTTS"))
TTS.register("piper", lazy("digihuman.engines.tts.piper", "PiperTTS"))
TTS.register("espeak", lazy("digihuman.engines.tts.espeak", "EspeakTTS"))
TTS.register("openai", lazy("digihuman.engines.tts.openai", "OpenAITTS"))
TTS.register("edge", lazy("digihuman.engines.tts.edge", "EdgeTTS"))
TTS.register("cosyvoice", lazy("digihuman.engines.tts.cosyvoice", "CosyVoiceTTS"))
TTS.register("fake", lazy("digihuman.engines.tts.fake", "FakeTTS"))
ASR.register("whisper", lazy("digihuman.engines.asr.whisper", "WhisperASR"))
ASR.register("openai", lazy("digihuman.engines.asr.openai", "OpenAIASR"))
ASR.register("funasr", lazy("digihuman.engines.asr.funasr", "FunASR"))
ASR.register("fake", lazy("digihuman.engines.asr.fake", "FakeASR"))
