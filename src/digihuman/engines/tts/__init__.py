"""Text to speech engines and the two entry points other layers use.

* :func:`create_tts` builds the engine named by a :class:`~digihuman.config.TTSSettings`.
* :func:`speech_stream` runs an engine and yields 16 kHz mono float32 chunks as it speaks
  (resampled on the fly, identical to resampling the whole file), ready for lip-sync.

Engines (registered in :mod:`digihuman.engines.base`): auto, kokoro, piper, espeak, openai,
edge, cosyvoice, fake. Each synthesizes sentence by sentence, so the first chunk comes after the
first sentence, not after the whole text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from digihuman.types import SAMPLE_RATE, AudioChunk

if TYPE_CHECKING:
    from digihuman.config import TTSSettings
    from digihuman.engines.base import TTSEngine


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def tts_kwargs(settings: TTSSettings, engine: str | None = None) -> dict[str, Any]:
    """The plain keyword arguments the named engine (default: ``settings.engine``) takes."""
    s = settings
    name = engine or s.engine
    common: dict[str, Any] = {"max_chars": s.max_chars, "max_sentence_chars": s.max_sentence_chars}
    piper = {
        "model_path": s.piper_model,
        "length_scale": s.piper_length_scale,
        "noise_scale": s.piper_noise_scale,
        "noise_w": s.piper_noise_w,
    }
    espeak = {
        "rate_zh": s.espeak_rate_zh,
        "rate_en": s.espeak_rate_en,
        "pitch_zh": s.espeak_pitch_zh,
    }
    kokoro = {
        "model_dir": s.kokoro_dir,
        "voice_zh": s.kokoro_voice_zh,
        "voice_en": s.kokoro_voice_en,
        "speed": s.kokoro_speed,
        "threads": s.kokoro_threads,
    }
    if name == "auto":
        return {**common, "piper": piper, "espeak": espeak, "kokoro": kokoro}
    if name == "kokoro":  # the engine on its own speaks English too (af_heart unless set)
        return {**common, **kokoro, "voice_en": s.kokoro_voice_en or "af_heart"}
    if name == "piper":
        return {**common, **piper}
    if name == "espeak":
        return {**common, **espeak}
    if name == "openai":
        return {
            **common,
            "base_url": s.openai_base_url,
            "model": s.openai_model,
            "api_key": _secret(s.openai_api_key),
            "voice": s.voice or s.openai_voice,
            "response_format": s.openai_response_format,
            "timeout_s": s.timeout_s,
        }
    if name == "edge":
        return {**common, "voice": s.voice or s.edge_voice, "rate": s.edge_rate}
    if name == "cosyvoice":
        return {
            **common,
            "url": s.cosyvoice_url,
            "reference_audio": s.reference_audio,
            "reference_text": s.reference_text,
            "speaker": s.voice or s.cosyvoice_speaker,
            "sample_rate": s.cosyvoice_sample_rate,
            "timeout_s": s.timeout_s,
        }
    if name == "fake":
        return {"max_chars": s.max_chars, "max_sentence_chars": s.max_sentence_chars}
    return {}


def create_tts(settings: TTSSettings, engine: str | None = None) -> TTSEngine:
    """Build the TTS engine the settings name (``engine`` overrides ``settings.engine``)."""
    from digihuman.engines.base import TTS

    name = engine or settings.engine
    return TTS.create(name, **tts_kwargs(settings, name))


def speech_stream(
    engine: TTSEngine,
    text: str,
    voice: str | None = None,
    language: str | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[AudioChunk]:
    """Speak ``text`` and yield mono float32 chunks at ``sample_rate`` (16 kHz) as the engine
    produces them. Raises :class:`~digihuman.errors.InputError` for empty or too long text
    before any audio is produced."""
    from .stream import resample_stream

    yield from resample_stream(engine.synthesize(text, voice=voice, language=language), sample_rate)


def synthesize_array(
    engine: TTSEngine,
    text: str,
    voice: str | None = None,
    language: str | None = None,
    sample_rate: int | None = None,
) -> tuple[Any, int]:
    """The whole utterance as one array: ``(samples, rate)``; at the engine's rate unless
    ``sample_rate`` is given."""
    from .stream import collect

    if sample_rate is not None:
        chunks = speech_stream(engine, text, voice, language, sample_rate)
    else:
        chunks = engine.synthesize(text, voice=voice, language=language)
    x, rate = collect(chunks)
    return x, (rate or sample_rate or engine.capabilities.sample_rate)


__all__ = ["create_tts", "speech_stream", "synthesize_array", "tts_kwargs"]
