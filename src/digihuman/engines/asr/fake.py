"""A deterministic ASR for tests of other layers: no weights.

It "hears" the fixed ``text`` whenever the audio is not silent, with one segment spanning the
non-silent part (with ``word_timestamps``, its words spread evenly over it); silent audio
gives an empty transcript and empty audio an InputError, like the real engines.
"""

from __future__ import annotations

import numpy as np

from digihuman.types import (
    SAMPLE_RATE,
    ASRCapabilities,
    Transcript,
    TranscriptSegment,
    TranscriptWord,
)

from .common import SILENCE_PEAK, check_audio, duration_s, is_silent


class FakeASR:
    name = "fake"

    def __init__(self, *, text: str = "hello world", language: str = "en") -> None:
        self.text, self.language = text, language
        self.capabilities = ASRCapabilities(languages=("zh", "en"), word_timestamps=True)

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, *, word_timestamps: bool = False
    ) -> Transcript:
        x = check_audio(audio)
        lang = language or self.language
        options = {"engine": self.name}
        if is_silent(x):
            return Transcript("", lang, (), duration_s(x), options)
        loud = np.flatnonzero(np.abs(x) >= SILENCE_PEAK)
        start, end = loud[0] / SAMPLE_RATE, (loud[-1] + 1) / SAMPLE_RATE
        words: tuple[TranscriptWord, ...] = ()
        if word_timestamps:
            parts = self.text.split() or [self.text]
            step = (end - start) / len(parts)
            words = tuple(
                TranscriptWord(start + i * step, start + (i + 1) * step, w, 1.0)
                for i, w in enumerate(parts)
            )
        seg = TranscriptSegment(start, end, self.text, words)
        return Transcript(self.text, lang, (seg,), duration_s(x), options)
