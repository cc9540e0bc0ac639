"""Length limits, sentence splitting and language segmentation (Chinese / English)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from digihuman.errors import InputError

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RE = re.compile(f"[{HAN}]")
_LATIN_RE = re.compile(r"[A-Za-z\u00c0-\u024f]")
_ZH_PUNCT = "，。！？；：、…「」『』（）《》〈〉“”‘’—～·"

# A sentence ends after Chinese terminal punctuation, after ! ? ; anywhere, after "." that is
# followed by a space or the end (so "3.5" and "e.g.x" stay whole), and at line breaks.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;…])[”’」』)\]\"']*|(?<=\.)[\"')\]]*(?=\s|$)|\n+")
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "etc.", "e.g.", "i.e.", "jr.", "sr."}
)
_SOFT_BREAK = re.compile(r"(?<=[，,、：:—])")


@dataclass(frozen=True)
class Run:
    """A piece of text in one language ("zh" or "en")."""

    language: str
    text: str


def has_han(text: str) -> bool:
    return _HAN_RE.search(text) is not None


def check_length(text: str, max_chars: int) -> str:
    """The stripped text, or :class:`InputError` when it is empty or longer than ``max_chars``."""
    stripped = text.strip()
    if not stripped:
        raise InputError("the text is empty; give something to say")
    if len(stripped) > max_chars:
        raise InputError(
            f"the text has {len(stripped)} characters, over the limit of {max_chars}; "
            "split it into several requests (or raise tts.max_chars)"
        )
    return stripped


def detect_language(text: str, default: str = "en") -> str:
    """ "zh" when Chinese characters dominate the words of ``text``, else "en" (or ``default``)."""
    han = len(_HAN_RE.findall(text))
    latin_words = len(re.findall(r"[A-Za-z\u00c0-\u024f]+", text))
    if han == 0 and latin_words == 0:
        return default
    return "zh" if han >= latin_words else "en"


def _hard_split(piece: str, max_len: int) -> list[str]:
    """Split a piece with no sentence punctuation into parts of at most ``max_len`` characters,
    at commas first, then at spaces, then anywhere."""
    if len(piece) <= max_len:
        return [piece]
    parts: list[str] = []
    for unit in (_SOFT_BREAK, re.compile(r"(?<=\s)")):
        pieces = [p for p in unit.split(piece) if p]
        if len(pieces) > 1:
            cur = ""
            for p in pieces:
                if cur and len(cur) + len(p) > max_len:
                    parts.append(cur)
                    cur = ""
                cur += p
            if cur:
                parts.append(cur)
            out: list[str] = []
            for p in parts:
                out.extend(_hard_split(p, max_len) if len(p) > max_len else [p])
            return out
    return [piece[i : i + max_len] for i in range(0, len(piece), max_len)]


def split_sentences(text: str, max_len: int = 200) -> list[str]:
    """Split text into sentences (Chinese and English punctuation), each at most ``max_len``
    characters (longer sentences are cut at commas, then spaces). Empty pieces are dropped."""
    if max_len < 8:
        raise ValueError("max_len must be at least 8")
    pieces: list[str] = []
    pos = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        candidate = text[pos:end]
        words = candidate.strip().split()
        if words and words[-1].lower() in _ABBREVIATIONS and m.group(0) != "\n":
            continue  # "Dr. Smith": not a sentence end
        pieces.append(candidate)
        pos = end
    pieces.append(text[pos:])
    out: list[str] = []
    for p in pieces:
        p = " ".join(p.split())
        if not p or not re.search(r"\w", p):
            if p and out and len(out[-1]) + len(p) <= max_len:
                out[-1] += p  # stray closing punctuation (dropped if it would not fit)
            continue
        out.extend(s.strip() for s in _hard_split(p, max_len) if s.strip())
    return out


def _script(ch: str) -> str | None:
    if _HAN_RE.match(ch) or ch in _ZH_PUNCT:
        return "zh"
    if _LATIN_RE.match(ch):
        return "en"
    return None


def split_by_script(text: str, default: str = "en") -> list[Run]:
    """Split mixed text into runs of Chinese and of English.

    Characters of neither script (digits, spaces, ASCII punctuation) join a neighbouring run:
    digits go with the following Chinese character when there is one ("3个", "2024年") and
    otherwise with the preceding run; everything else goes with the preceding run.
    """
    labels: list[str | None] = [_script(c) for c in text]
    n = len(text)
    # digits (and a decimal point/percent inside a number) directly before Chinese: Chinese
    i = 0
    while i < n:
        if text[i].isdigit():
            j = i
            while j < n and (text[j].isdigit() or text[j] in ".,:%-/"):
                j += 1
            k = j
            while k < n and text[k] == " ":
                k += 1
            if k < n and labels[k] == "zh":
                for t in range(i, j):
                    labels[t] = "zh"
            i = j
        else:
            i += 1
    prev: str | None = None
    for idx, lab in enumerate(labels):
        if lab is None:
            labels[idx] = prev
        else:
            prev = lab
    first = next((lab for lab in labels if lab is not None), default)
    runs: list[Run] = []
    cur_lang: str | None = None
    cur = ""
    for ch, lab in zip(text, labels, strict=True):
        lang = lab or first
        if lang != cur_lang and cur:
            runs.append(Run(cur_lang or first, cur))
            cur = ""
        cur_lang = lang
        cur += ch
    if cur:
        runs.append(Run(cur_lang or first, cur))
    # drop runs with nothing to say, folding them into the previous run
    merged: list[Run] = []
    for r in runs:
        if not re.search(r"\w", r.text) and merged:
            merged[-1] = Run(merged[-1].language, merged[-1].text + r.text)
        elif merged and merged[-1].language == r.language:
            merged[-1] = Run(r.language, merged[-1].text + r.text)
        else:
            merged.append(r)
    return [Run(r.language, r.text.strip()) for r in merged if r.text.strip()]


def sentences_for_speech(text: str, max_chars: int, max_sentence_chars: int = 200) -> list[str]:
    """The bounded sentence list a TTS engine speaks one by one (see :func:`check_length`)."""
    return split_sentences(check_length(text, max_chars), max_sentence_chars)
