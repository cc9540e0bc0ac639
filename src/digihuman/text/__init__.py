"""Text handling for speech: length limits, sentence splitting, numbers and dates read aloud,
language segmentation of mixed Chinese/English text, and Chinese → pinyin with tone numbers.

Pure Python; ``pypinyin``, ``cn2an`` and ``num2words`` (the ``speech`` extra) are imported inside
the functions that need them.
"""

from __future__ import annotations

from digihuman.text.normalize import normalize_en, normalize_zh
from digihuman.text.pinyin import to_pinyin
from digihuman.text.segment import (
    Run,
    check_length,
    detect_language,
    has_han,
    sentences_for_speech,
    split_by_script,
    split_sentences,
)

__all__ = [
    "Run",
    "check_length",
    "detect_language",
    "has_han",
    "normalize_en",
    "normalize_zh",
    "sentences_for_speech",
    "split_by_script",
    "split_sentences",
    "to_pinyin",
]
