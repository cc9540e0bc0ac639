"""espeak-ng: Mandarin from pinyin with tone numbers (voice ``cmn-latn-pinyin``) and English.

Debian's espeak-ng has no Chinese-character dictionary, so Mandarin goes through
:func:`digihuman.text.to_pinyin` (numbers first written as Chinese words). Mixed sentences are
split by script and each part spoken with the right voice.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator

import numpy as np

from digihuman.errors import InputError, MissingDependencyError
from digihuman.text import normalize_en, normalize_zh, sentences_for_speech, to_pinyin
from digihuman.types import AudioChunk, TTSCapabilities

from .http import WavStreamParser
from .mixed import speak_sentence

log = logging.getLogger(__name__)

ESPEAK_RATE = 22050


class EspeakTTS:
    """espeak-ng driven as a subprocess, one chunk per sentence at 22050 Hz."""

    name = "espeak"

    def __init__(
        self,
        *,
        voice_zh: str = "cmn-latn-pinyin",
        voice_en: str = "en-us",
        rate_zh: int = 110,
        rate_en: int = 165,
        pitch: int | None = None,
        pitch_zh: int | None = None,
        executable: str | None = None,
        max_chars: int = 2000,
        max_sentence_chars: int = 200,
        timeout_s: float = 60.0,
    ) -> None:
        exe = executable or shutil.which("espeak-ng")
        if not exe:
            raise MissingDependencyError(
                "espeak-ng is not installed; install it with 'sudo apt-get install espeak-ng' "
                "(scripts/install.sh does this)"
            )
        self._exe = exe
        self.voice_zh, self.voice_en = voice_zh, voice_en
        self.rate_zh, self.rate_en = rate_zh, rate_en
        self.pitch = pitch  # 0-99, espeak-ng's default 50
        self.pitch_zh = pitch_zh if pitch_zh is not None else pitch
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars
        self.timeout_s = timeout_s
        self.capabilities = TTSCapabilities(
            sample_rate=ESPEAK_RATE, languages=("zh", "en"), voices=(voice_zh, voice_en)
        )

    def _run(self, text: str, voice: str, rate: int, pitch: int | None = None) -> np.ndarray:
        args = [self._exe, "--stdout", "-v", voice, "-s", str(rate)]
        if pitch is not None:
            args += ["-p", str(pitch)]
        try:
            proc = subprocess.run(
                args, input=text.encode("utf-8"), capture_output=True, timeout=self.timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise InputError(
                f"espeak-ng took over {self.timeout_s:.0f} s; shorten the text"
            ) from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise InputError(f"espeak-ng failed: {err[-1] if err else proc.returncode}")
        parser = WavStreamParser()
        x = parser.feed(proc.stdout)
        if parser.sample_rate != ESPEAK_RATE:  # pragma: no cover - espeak-ng always uses 22050
            from .stream import resample_exact

            x = resample_exact(x, parser.sample_rate or ESPEAK_RATE, ESPEAK_RATE)
        return x

    def speak(self, text: str, language: str) -> np.ndarray:
        """One piece of text in one language (already bounded) → samples at 22050 Hz."""
        if language == "zh":
            pinyin = to_pinyin(normalize_zh(text))
            if not pinyin.strip(" ,."):
                return np.zeros(0, dtype=np.float32)
            return self._run(pinyin, self.voice_zh, self.rate_zh, self.pitch_zh)
        return self._run(normalize_en(text), self.voice_en, self.rate_en, self.pitch)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        for sentence in sentences_for_speech(text, self.max_chars, self.max_sentence_chars):
            x = speak_sentence(sentence, language, self.speak, ESPEAK_RATE)
            if len(x):
                yield AudioChunk(x, ESPEAK_RATE)
