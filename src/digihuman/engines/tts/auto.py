"""The default TTS: piper for English, espeak-ng (pinyin) for Mandarin, mixed sentences split."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from digihuman.text import sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities

from .espeak import EspeakTTS
from .mixed import speak_sentence
from .piper import PiperTTS
from .stream import collect, resample_exact


class AutoTTS:
    """Chooses the engine per language run; every chunk is at the piper voice's rate."""

    name = "auto"

    def __init__(
        self,
        *,
        piper: dict[str, Any] | None = None,
        espeak: dict[str, Any] | None = None,
        max_chars: int = 2000,
        max_sentence_chars: int = 200,
    ) -> None:
        self.english = PiperTTS(**(piper or {}), max_chars=max_chars)
        self.mandarin = EspeakTTS(**(espeak or {}), max_chars=max_chars)
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars
        rate = self.english.capabilities.sample_rate
        self.capabilities = TTSCapabilities(
            sample_rate=rate,
            languages=("zh", "en"),
            voices=(self.english.voice_name, self.mandarin.voice_zh),
        )

    def speak(self, text: str, language: str) -> np.ndarray:
        rate = self.capabilities.sample_rate
        if language == "zh":
            x = self.mandarin.speak(text, "zh")
            src = self.mandarin.capabilities.sample_rate
        else:
            x, src = collect(self.english.speak(text))
            src = src or rate
        return x if src == rate else resample_exact(x, src, rate)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        rate = self.capabilities.sample_rate
        for sentence in sentences_for_speech(text, self.max_chars, self.max_sentence_chars):
            x = speak_sentence(sentence, language, self.speak, rate)
            if len(x):
                yield AudioChunk(x, rate)
