"""Chinese text → pinyin with tone numbers, as espeak-ng's ``cmn-latn-pinyin`` voice reads it."""

from __future__ import annotations

import re

from digihuman.errors import missing_extra
from digihuman.text.segment import HAN

_HAN_RUN = re.compile(f"[{HAN}]+")
_PAUSE_SHORT = "，、；：,;:—～"
_PAUSE_LONG = "。！？!?…."
_DIGITS = "零一二三四五六七八九"


def _punctuation(chunk: str) -> str:
    out = []
    for ch in chunk:
        if ch in _PAUSE_LONG:
            out.append(". ")
        elif ch in _PAUSE_SHORT:
            out.append(", ")
        elif ch.isdigit():
            out.append(f" {_DIGITS[int(ch)]} ")  # re-converted below
        elif ch.isalpha() and ch.isascii():
            out.append(ch)
        else:
            out.append(" ")
    return "".join(out)


def to_pinyin(text: str) -> str:
    """Pinyin with tone numbers 1-5 (5 = neutral), ü written ``v``, syllables separated by
    spaces; Chinese and ASCII punctuation become ", " (short pause) or ". " (long pause).

    Numbers should already be words (:func:`digihuman.text.normalize_zh`); stray digits are read
    one by one. Latin letters are kept as they are.
    """
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError as exc:  # pragma: no cover - the speech extra installs it
        raise missing_extra("pypinyin", "speech") from exc

    def han(s: str) -> str:
        syl = lazy_pinyin(s, style=Style.TONE3, neutral_tone_with_five=True, tone_sandhi=True)
        return " " + " ".join(syl) + " "

    pieces: list[str] = []
    pos = 0
    for m in _HAN_RUN.finditer(text):
        pieces.append(_punctuation(text[pos : m.start()]))
        pieces.append(han(m.group(0)))
        pos = m.end()
    tail = _punctuation(text[pos:])
    pieces.append(tail)
    joined = "".join(pieces)
    # digits turned into Chinese numerals above: convert those to pinyin too
    joined = _HAN_RUN.sub(lambda m: han(m.group(0)), joined)
    joined = re.sub(r"\s+([,.])", r"\1", joined)
    joined = re.sub(r"([,.])(\s*[,.])+", r"\1", joined)
    return " ".join(joined.split()).strip(" ,")
