"""Speaking a sentence that mixes Chinese and English: split by script, speak each run with
the engine for its language, join with faded edges (no clicks) and a short pause."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from digihuman.text import detect_language, split_by_script

from .stream import join_pieces


def speak_sentence(
    sentence: str,
    language: str | None,
    speak: Callable[[str, str], np.ndarray],
    sample_rate: int,
    gap_ms: float = 30.0,
) -> np.ndarray:
    """``speak(text, language)`` returns samples at ``sample_rate``.

    ``language`` forces one language for text without Chinese characters; Chinese characters
    are always spoken as Chinese.
    """
    runs = split_by_script(sentence, default=language or detect_language(sentence))
    pieces = [speak(r.text, r.language) for r in runs]
    pieces = [p for p in pieces if len(p)]
    if len(pieces) == 1:
        return pieces[0]
    return join_pieces(pieces, sample_rate, gap_ms=gap_ms)
