"""A deterministic ASR for tests of other layers: no weights.

It "hears" the fixed ``text`` whenever the audio is not silent, with one segment spanning the
non-silent part; silent audio gives an empty transcript and empty audio an InputError, like the
real engines.
"""

from __future__ import annotations

import numpy as np

from digihuman.types import SAMPLE_RATE, ASRCapabilities, Transcript, TranscriptSegment

from .common import SILENCE_PEAK, check_audio, duration_s, is_silent


class FakeASR:
    name = "fake"

    def __init__(self, *, text: str = "hello world", language: str = "en") -> None:
        self.text, self.language = text, language
        self.capabilities = ASRCapabilities(languages=("zh", "en"))

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        x = check_audio(audio)
        lang = language or self.language
        options = {"engine": self.name}
        if is_silent(x):
            return Transcript("", lang, (), duration_s(x), options)
        loud = np.flatnonzero(np.abs(x) >= SILENCE_PEAK)
        seg = TranscriptSegment(loud[0] / SAMPLE_RATE, (loud[-1] + 1) / SAMPLE_RATE, self.text)
        return Transcript(self.text, lang, (seg,), duration_s(x), options)
