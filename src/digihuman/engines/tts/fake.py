"""A deterministic TTS for tests of other layers: no weights, no subprocess.

Each sentence becomes a tone whose pitch follows the characters of the text, 60 ms per
character, with 0.1 s of silence after it; the same text always gives the same samples.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np

from digihuman.text import sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities


class FakeTTS:
    name = "fake"

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        seconds_per_char: float = 0.06,
        max_chars: int = 2000,
        max_sentence_chars: int = 200,
    ) -> None:
        self.seconds_per_char = seconds_per_char
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars
        self.capabilities = TTSCapabilities(
            sample_rate=sample_rate, languages=("zh", "en"), voices=("fake",)
        )

    def _sentence(self, sentence: str) -> np.ndarray:
        rate = self.capabilities.sample_rate
        n = int(rate * self.seconds_per_char)
        t = np.arange(n, dtype=np.float64) / rate
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        parts = []
        for ch in sentence:
            freq = 120.0 + (zlib.crc32(ch.encode("utf-8")) % 200)
            parts.append(0.3 * np.sin(2 * np.pi * freq * t) * ramp)
        parts.append(np.zeros(int(rate * 0.1)))
        return np.concatenate(parts).astype(np.float32)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        for sentence in sentences_for_speech(text, self.max_chars, self.max_sentence_chars):
            yield AudioChunk(self._sentence(sentence), self.capabilities.sample_rate)
