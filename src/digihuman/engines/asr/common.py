"""Input checks and output clean-up shared by the ASR engines."""

from __future__ import annotations

import numpy as np

from digihuman.errors import InputError, missing_extra
from digihuman.types import SAMPLE_RATE

SILENCE_PEAK = 1e-3  # audio whose peak stays below this is treated as silence

LANGUAGE_CODES = {"english": "en", "chinese": "zh", "mandarin": "zh", "cantonese": "yue"}


def check_audio(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono float32; :class:`InputError` for empty or non-finite audio."""
    x = np.asarray(audio)
    if x.ndim == 2:  # (n, channels) or (channels, n): mix down
        x = x.mean(axis=1 if x.shape[0] > x.shape[1] else 0)
    if x.ndim != 1:
        raise InputError(f"audio must be mono samples, got an array of shape {x.shape}")
    if x.size == 0:
        raise InputError("the audio is empty (0 samples); record or upload some speech")
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise InputError("the audio contains invalid samples (NaN or infinity)")
    return x


def is_silent(x: np.ndarray) -> bool:
    return float(np.max(np.abs(x))) < SILENCE_PEAK


def duration_s(x: np.ndarray) -> float:
    return len(x) / float(SAMPLE_RATE)


def language_code(name: str | None) -> str:
    if not name:
        return ""
    n = name.strip().lower()
    return LANGUAGE_CODES.get(n, n)


def to_simplified(text: str) -> str:
    """Traditional → Simplified Chinese characters (other text unchanged)."""
    try:
        import zhconv
    except ImportError as exc:  # pragma: no cover - the speech extra installs it
        raise missing_extra("zhconv", "speech") from exc
    return str(zhconv.convert(text, "zh-cn"))


def join_text(pieces: list[str], language: str) -> str:
    """Join segment texts: no spaces between Chinese segments, one space for others."""
    parts = [p.strip() for p in pieces if p.strip()]
    return ("" if language in ("zh", "yue", "ja") else " ").join(parts)
