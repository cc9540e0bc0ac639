"""The default TTS: Kokoro for Mandarin when its model is installed (espeak-ng pinyin when not),
piper for English (or a Kokoro English voice when ``kokoro.voice_en`` is set), mixed sentences
split by script."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from digihuman.errors import InputError, MissingDependencyError, MissingWeightsError
from digihuman.text import sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities

from . import kokoro_files as F
from .espeak import EspeakTTS
from .kokoro import KokoroTTS, ahead
from .mixed import speak_sentence
from .piper import PiperTTS
from .stream import collect, resample_exact

log = logging.getLogger(__name__)
_KOKORO_NAME = re.compile(r"[abefhijpz][fm]_[a-z]+")  # Kokoro's voice names: zf_xiaoxiao, af_heart


def _kokoro_or_none(kwargs: dict[str, Any], max_chars: int) -> KokoroTTS | None:
    """The Kokoro engine, or ``None`` when its model or front end is not installed (a
    corrupted model is an error, not a silent fallback). English stays off unless
    ``voice_en`` is given."""
    try:
        return KokoroTTS(**{"voice_en": None, **kwargs}, max_chars=max_chars)
    except F.CorruptedError:
        raise
    except MissingWeightsError as exc:
        log.warning("Mandarin falls back to espeak-ng: %s", exc)
    except MissingDependencyError as exc:
        log.warning("Mandarin falls back to espeak-ng: %s (%s)", exc, F.INSTALL_HINT)
    return None


class AutoTTS:
    """Chooses the engine per language run; every chunk is at one rate (24 kHz with Kokoro,
    the piper voice's 22050 Hz without)."""

    name = "auto"

    def __init__(
        self,
        *,
        piper: dict[str, Any] | None = None,
        espeak: dict[str, Any] | None = None,
        kokoro: dict[str, Any] | None = None,
        max_chars: int = 2000,
        max_sentence_chars: int = 200,
    ) -> None:
        self.kokoro = _kokoro_or_none(kokoro or {}, max_chars)
        self.english: Any
        self.mandarin: Any
        rate: int
        if self.kokoro is not None and self.kokoro.voice_en is not None:
            self.english = self.kokoro
            en_voice: str = self.kokoro.voice_en
        else:
            piper_tts = PiperTTS(**(piper or {}), max_chars=max_chars)
            self.english, en_voice = piper_tts, piper_tts.voice_name
        if self.kokoro is not None:
            self.mandarin, zh_voice = self.kokoro, self.kokoro.voice_zh
            rate = self.kokoro.capabilities.sample_rate
        else:
            espeak_tts = EspeakTTS(**(espeak or {}), max_chars=max_chars)
            self.mandarin, zh_voice = espeak_tts, espeak_tts.voice_zh
            rate = self.english.capabilities.sample_rate
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars
        self.capabilities = TTSCapabilities(
            sample_rate=rate, languages=("zh", "en"), voices=(en_voice, zh_voice)
        )

    def _speaker(self, voice: str | None) -> Callable[[str, str], np.ndarray]:
        rate = self.capabilities.sample_rate

        def speak(text: str, language: str) -> np.ndarray:
            engine = self.mandarin if language == "zh" else self.english
            if engine is self.kokoro and self.kokoro is not None:
                x = self.kokoro.speak(text, language, voice)
                src = self.kokoro.capabilities.sample_rate
            elif engine is self.english:
                x, src = collect(self.english.speak(text))
                src = src or self.english.capabilities.sample_rate
            else:
                x, src = self.mandarin.speak(text, "zh"), self.mandarin.capabilities.sample_rate
            return x if src == rate or not len(x) else resample_exact(x, src, rate)

        return speak

    def speak(self, text: str, language: str) -> np.ndarray:
        """One run of text in one language → samples at ``capabilities.sample_rate``."""
        return self._speaker(None)(text, language)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        voice = self._kokoro_voice(voice)
        speak = self._speaker(voice)
        rate = self.capabilities.sample_rate
        pause = np.zeros(0, dtype=np.float32)
        if self.kokoro is not None:
            pause = np.zeros(int(self.kokoro.sentence_pause_s * rate), dtype=np.float32)

        def one(sentence: str) -> np.ndarray:
            x = speak_sentence(sentence, language, speak, rate)
            return np.concatenate([x, pause]) if len(x) and len(pause) else x

        for x in ahead(one, sentences_for_speech(text, self.max_chars, self.max_sentence_chars)):
            if len(x):
                yield AudioChunk(x, rate)

    def _kokoro_voice(self, voice: str | None) -> str | None:
        """A Kokoro voice name picks that voice for its language; a name shaped like one that
        is not installed is an error; other names (meant for other engines) are ignored."""
        if voice is None or self.kokoro is None:
            return None
        if voice in self.kokoro.capabilities.voices:
            return voice
        if _KOKORO_NAME.fullmatch(voice):
            raise InputError(
                f"unknown Kokoro voice {voice!r}; installed: "
                f"{', '.join(self.kokoro.capabilities.voices)}"
            )
        return None
