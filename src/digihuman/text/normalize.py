"""Numbers, dates, times, money and percentages read naturally, in English and in Chinese."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from digihuman.errors import missing_extra

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_ISO_DATE = re.compile(r"(?<![\d.])(\d{4})-(\d{1,2})-(\d{1,2})(?![\d.]\d)")
_SLASH_DATE = re.compile(r"(?<![\d.])(\d{4})/(\d{1,2})/(\d{1,2})(?![\d.]\d)")
_TIME = re.compile(
    r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])(?:\s*([ap])\.?m\.?(?![a-z]))?", re.IGNORECASE
)
_MONEY = re.compile(r"([$€£¥])\s?(\d[\d,]*)(?:\.(\d{1,2}))?")
_PERCENT = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_YEAR = re.compile(r"(?<![\d.,])\b(1[1-9]\d\d|20\d\d)\b(?![\d.,]\d)(?!\s*%)")
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\d])")
_CURRENCY_EN = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny")}


def _n2w() -> Callable[..., str]:
    try:
        from num2words import num2words
    except ImportError as exc:  # pragma: no cover - the speech extra installs it
        raise missing_extra("num2words", "speech") from exc
    return num2words


def _en_number(sign: str, whole: str, frac: str | None) -> str:
    n2w = _n2w()
    words = n2w(int(whole.replace(",", "")))
    if frac:
        words += " point " + " ".join(n2w(int(d)) for d in frac)
    return ("minus " if sign else "") + words


def normalize_en(text: str) -> str:
    """Write numbers, dates (ISO), times, money, percentages and ordinals as English words."""
    n2w = _n2w()

    def date(m: re.Match[str]) -> str:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (1 <= mo <= 12 and 1 <= d <= 31):
            return m.group(0)
        return f"{_MONTHS[mo - 1]} {n2w(d, to='ordinal')}, {n2w(y, to='year')}"

    def time(m: re.Match[str]) -> str:
        h, mi, ap = int(m.group(1)), int(m.group(2)), m.group(3)
        hw = n2w(h)
        if mi == 0:
            words = f"{hw} o'clock" if not ap else hw
        elif mi < 10:
            words = f"{hw} oh {n2w(mi)}"
        else:
            words = f"{hw} {n2w(mi)}"
        if ap:
            words += " a m" if ap.lower() == "a" else " p m"
        return words

    def money(m: re.Match[str]) -> str:
        unit, sub = _CURRENCY_EN.get(m.group(1), ("yen", "sen"))
        whole = int(m.group(2).replace(",", ""))
        words = f"{n2w(whole)} {unit}{'' if whole == 1 or unit == 'yen' else 's'}"
        if m.group(3):
            cents = int(m.group(3).ljust(2, "0"))
            if cents:
                plural = sub if cents == 1 else ("pence" if sub == "penny" else sub + "s")
                words += f" and {n2w(cents)} {plural}"
        return words

    def percent(m: re.Match[str]) -> str:
        s = m.group(1)
        whole, _, frac = s.lstrip("-").partition(".")
        return _en_number("-" if s.startswith("-") else "", whole, frac or None) + " percent"

    text = _ISO_DATE.sub(date, text)
    text = _SLASH_DATE.sub(date, text)
    text = _TIME.sub(time, text)
    text = _MONEY.sub(money, text)
    text = _PERCENT.sub(percent, text)
    text = _ORDINAL.sub(lambda m: n2w(int(m.group(1)), to="ordinal"), text)
    text = _YEAR.sub(lambda m: n2w(int(m.group(1)), to="year"), text)
    text = _NUMBER.sub(lambda m: _en_number(m.group(1), m.group(2), m.group(3)), text)
    return text


def _cn2an() -> Any:
    try:
        import cn2an
    except ImportError as exc:  # pragma: no cover - the speech extra installs it
        raise missing_extra("cn2an", "speech") from exc
    return cn2an


_ZH_DIGITS = "零一二三四五六七八九"


def normalize_zh(text: str) -> str:
    """Write numbers, dates, times and percentages as Chinese words.

    ``2024-03-15`` → 二零二四年三月十五日, ``10:30`` → 十点三十分, ``50%`` → 百分之五十,
    ``12.5`` → 十二点五, long digit strings (phone numbers, 7+ digits or a leading 0) digit by
    digit.
    """
    cn2an = _cn2an()

    def date(m: re.Match[str]) -> str:
        return f"{int(m.group(1))}年{int(m.group(2))}月{int(m.group(3))}日"

    def time(m: re.Match[str]) -> str:
        h, mi = int(m.group(1)), int(m.group(2))
        return f"{h}点" if mi == 0 else f"{h}点{mi}分"

    def digits(m: re.Match[str]) -> str:
        return "".join(_ZH_DIGITS[int(d)] for d in m.group(0))

    text = _ISO_DATE.sub(date, text)
    text = _SLASH_DATE.sub(date, text)
    text = _TIME.sub(time, text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 → 1000
    text = re.sub(r"(?<![\d.])(?:0\d+|\d{7,})(?![\d.])", digits, text)
    try:
        out: str = cn2an.transform(text, "an2cn")
    except Exception:  # cn2an rejects some odd inputs; fall back to numbers one by one
        out = re.sub(r"\d+(?:\.\d+)?", lambda m: cn2an.an2cn(m.group(0)), text)
    # 2 before a measure word reads 两 (两个, 两点), not 二
    out = re.sub(
        r"(?<![一二三四五六七八九十百千万亿点])二(?=[个点位次本只条张年]?[个点位次本只条张])",
        "两",
        out,
    )
    return out
