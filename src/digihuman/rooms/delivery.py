"""Delivery metrics of a spoken answer, from its transcript and word timings.

Pure functions (no engine, no I/O): the ``answer`` job computes them after ASR and the report
reads them. Speaking rate is Chinese characters per minute for Chinese (each Latin word in a
Chinese answer counts as one) and words per minute otherwise, over the time from the first
word to the last; filler words are counted in the transcript (longest phrase first, so
"就是说" is one filler, not "就是" + "说"); a long pause is a silence of at least
``long_pause_s`` between two words; the answer's length is compared with the question's
suggested length.

ASR models tidy speech: whisper in particular often leaves out "um"/"嗯", so the filler count
is a lower bound (see docs/architecture.md).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FILLERS: dict[str, tuple[str, ...]] = {
    "zh": ("嗯", "啊", "呃", "额", "哦", "那个", "就是说", "就是", "然后呢", "这个这个", "对吧"),
    "en": (
        "um",
        "umm",
        "uh",
        "uhm",
        "er",
        "erm",
        "ah",
        "hmm",
        "like",
        "you know",
        "i mean",
        "basically",
        "actually",
        "kind of",
        "sort of",
    ),
}
"""Filler words and phrases per language (Chinese matched as substrings, English as words)."""

RATE_BANDS: dict[str, tuple[float, float]] = {"zh": (150.0, 300.0), "en": (100.0, 170.0)}
"""A comfortable interview pace: (slow below, fast above), characters or words per minute."""

LENGTH_BANDS = (0.5, 1.6)
"""An answer shorter than half the suggested length is short; over 1.6 times it is long."""

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str


def units(text: str, language: str) -> int:
    """Characters (Chinese) or words (other languages) in ``text``."""
    latin = len(_LATIN_WORD.findall(text))
    if language == "zh":
        return len(_CJK.findall(text)) + latin
    return latin + len(_CJK.findall(text))


def count_fillers(text: str, language: str) -> dict[str, int]:
    """Each filler of ``language`` found in ``text`` and how often (absent ones left out)."""
    fillers = sorted(FILLERS.get(language, FILLERS["en"]), key=len, reverse=True)
    found: dict[str, int] = {}
    if language == "zh":
        rest = text
        for f in fillers:  # longest first; each match is cut out so it counts once
            n = rest.count(f)
            if n:
                found[f] = n
                rest = rest.replace(f, "|")
        return found
    rest = text.lower().replace("’", "'")
    for f in fillers:
        # "like" is a filler only set off by a comma ("it was, like, fine"), not "I like it"
        pat = _LIKE if f == "like" else re.compile(rf"(?<![a-z']){re.escape(f)}(?![a-z'])")
        rest, n = pat.subn("|", rest)
        if n:
            found[f] = n
    return found


_LIKE = re.compile(r",\s*like(?![a-z'])|(?<![a-z'])like\s*,")


def long_pauses(words: Sequence[Word], long_pause_s: float) -> list[dict[str, float]]:
    """Silences of at least ``long_pause_s`` between consecutive words."""
    out = []
    for a, b in itertools.pairwise(words):
        gap = b.start - a.end
        if gap >= long_pause_s:
            out.append(
                {"start": round(a.end, 2), "end": round(b.start, 2), "seconds": round(gap, 2)}
            )
    return out


def _verdict(value: float, low: float, high: float, names: tuple[str, str, str]) -> str:
    return names[0] if value < low else names[2] if value > high else names[1]


def delivery_metrics(
    words: Iterable[Word],
    *,
    text: str,
    language: str,
    duration_s: float,
    suggested_s: float,
    long_pause_s: float = 2.0,
) -> dict[str, Any]:
    """The delivery metrics of one answer (JSON-able; see the module doc)."""
    ws = sorted((w for w in words if w.text.strip()), key=lambda w: w.start)
    lang = "zh" if language == "zh" else "en"
    n_units = units(text, lang)
    if ws:
        first, last = ws[0].start, max(w.end for w in ws)
    else:
        first, last = 0.0, 0.0
    speaking_s = max(0.0, last - first)
    rate = n_units / speaking_s * 60.0 if speaking_s > 0.5 else 0.0
    low, high = RATE_BANDS[lang]
    fillers = count_fillers(text, lang)
    n_fill = sum(fillers.values())
    pauses = long_pauses(ws, long_pause_s)
    answer_s = last if ws else 0.0  # from the start of the recording to the last word
    ratio = answer_s / suggested_s if suggested_s > 0 else 0.0
    minutes = speaking_s / 60.0
    return {
        "language": lang,
        "unit": "characters" if lang == "zh" else "words",
        "units": n_units,
        "duration_s": round(duration_s, 2),
        "speaking_s": round(speaking_s, 2),
        "rate_per_min": round(rate, 1),
        "rate": "none" if rate <= 0 else _verdict(rate, low, high, ("slow", "ok", "fast")),
        "rate_band": [low, high],
        "fillers": {
            "total": n_fill,
            "per_min": round(n_fill / minutes, 2) if minutes > 0 else 0.0,
            "share": round(n_fill / n_units, 3) if n_units else 0.0,
            "items": fillers,
        },
        "pauses": {
            "threshold_s": long_pause_s,
            "count": len(pauses),
            "longest_s": max((p["seconds"] for p in pauses), default=0.0),
            "total_s": round(sum(p["seconds"] for p in pauses), 2),
            "lead_in_s": round(first, 2),  # thinking time before the first word
            "long": pauses,
        },
        "length": {
            "answer_s": round(answer_s, 2),
            "suggested_s": suggested_s,
            "ratio": round(ratio, 2),
            "verdict": "none"
            if not ws
            else _verdict(ratio, LENGTH_BANDS[0], LENGTH_BANDS[1], ("short", "ok", "long")),
        },
    }


def words_from_segments(segments: Iterable[Any], language: str) -> list[Word]:
    """Words with times estimated from segment times (for an engine without word timings):
    a segment's duration is shared out in proportion to the words' lengths."""
    out: list[Word] = []
    for seg in segments:
        text = str(seg.text)
        if language == "zh":
            pieces = re.findall(r"[\u3400-\u9fff]|[A-Za-z0-9']+", text)
        else:
            pieces = text.split()
        if not pieces:
            continue
        total = sum(len(p) for p in pieces)
        t = float(seg.start)
        span = max(0.0, float(seg.end) - float(seg.start))
        for p in pieces:
            d = span * len(p) / total
            out.append(Word(t, t + d, p))
            t += d
    return out
