"""Speech to text engines: whisper (faster-whisper, offline default), openai, funasr, fake.

* :func:`create_asr` builds the engine named by an :class:`~digihuman.config.ASRSettings`.
* :func:`download_whisper` fetches a larger faster-whisper model (``digihuman models download``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digihuman.config import ASRSettings
    from digihuman.engines.base import ASREngine


def asr_kwargs(settings: ASRSettings, engine: str | None = None) -> dict[str, Any]:
    s = settings
    name = engine or s.engine
    if name == "whisper":
        return {
            "model": s.model,
            "model_dir": s.model_dir,
            "device": s.device,
            "compute_type": s.compute_type,
            "cpu_threads": s.cpu_threads,
            "beam_size": s.beam_size,
            "vad_filter": s.vad_filter,
            "detect_languages": tuple(s.detect_languages),
        }
    if name == "openai":
        key = s.openai_api_key.get_secret_value() if s.openai_api_key else None
        return {
            "base_url": s.openai_base_url,
            "model": s.openai_model,
            "api_key": key,
            "timeout_s": s.timeout_s,
        }
    if name == "funasr":
        return {"model": s.funasr_model, "device": s.funasr_device}
    return {}


def create_asr(settings: ASRSettings, engine: str | None = None) -> ASREngine:
    """Build the ASR engine the settings name (``engine`` overrides ``settings.engine``)."""
    from digihuman.engines.base import ASR

    name = engine or settings.engine
    return ASR.create(name, **asr_kwargs(settings, name))


def download_whisper(name: str, dest: str | os.PathLike[str], **kwargs: Any) -> Path:
    """See :func:`digihuman.engines.asr.whisper.download_whisper`."""
    from .whisper import download_whisper as _download

    return _download(name, dest, **kwargs)


__all__ = ["asr_kwargs", "create_asr", "download_whisper"]
