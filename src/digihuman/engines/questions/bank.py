"""The offline question engine: a bilingual bank, a job-title matcher and a seeded sampler.

* :func:`load_bank` reads ``bank/families.json`` and ``bank/questions.txt`` (package data) and
  checks them: every question has Chinese and English text, a known competency and family.
* :class:`JobMatcher` maps a free-text job title (Chinese or English) to job families: Chinese
  keywords as substrings, English keywords as words or phrases, light plural stemming, and
  fuzzy matching (``difflib``) for typos. An unknown title gives ``("general",)``, never an error.
* :func:`sample` draws ``count`` distinct questions: it walks a competency plan (technical,
  behavioural, technical, situational, teamwork, ...), taking family questions first and general
  ones after, so a set mixes competencies; the same seed gives the same set.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import (
    COMPETENCIES,
    LANGUAGES,
    SUGGESTED_S,
    Question,
    QuestionCapabilities,
    QuestionOptions,
    QuestionSet,
    has_cjk,
)

BANK_DIR = Path(__file__).parent / "bank"
GENERAL = "general"

PLAN = (
    "technical",
    "behavioural",
    "technical",
    "situational",
    "teamwork",
    "technical",
    "motivation",
    "problem_solving",
    "technical",
    "communication",
    "behavioural",
    "technical",
    "situational",
    "learning",
    "technical",
    "teamwork",
    "leadership",
    "behavioural",
    "technical",
    "motivation",
)
"""The competency of each slot, cycled; a slot whose pool is empty is skipped."""


@dataclass(frozen=True)
class BankQuestion:
    id: str
    family: str
    competency: str
    zh: str
    en: str

    def text(self, language: str) -> str:
        return self.zh if language == "zh" else self.en


@dataclass(frozen=True)
class Family:
    id: str
    name_zh: str
    name_en: str
    zh: tuple[str, ...]
    en: tuple[str, ...]


@dataclass(frozen=True)
class Bank:
    families: dict[str, Family]
    questions: tuple[BankQuestion, ...]
    version: str  # sha256 of the two files (first 12 hex): rooms record which bank they used

    def of_family(self, family: str) -> list[BankQuestion]:
        return [q for q in self.questions if q.family == family]


class BankError(ValueError):
    """The bank files are malformed (a packaging or editing mistake)."""


def load_bank(directory: str | Path | None = None) -> Bank:
    """Read and check the bank (the bundled one unless ``directory`` names another)."""
    d = Path(directory) if directory is not None else BANK_DIR
    fam_bytes = (d / "families.json").read_bytes()
    q_bytes = (d / "questions.txt").read_bytes()
    raw = json.loads(fam_bytes)["families"]
    families = {
        fid: Family(
            id=fid,
            name_zh=str(f["name_zh"]),
            name_en=str(f["name_en"]),
            zh=tuple(str(k).lower() for k in f.get("zh", ())),
            en=tuple(str(k).lower() for k in f.get("en", ())),
        )
        for fid, f in raw.items()
    }
    if GENERAL not in families:
        raise BankError("families.json has no 'general' family")
    questions: list[BankQuestion] = []
    counts: dict[str, int] = {}
    family: str | None = None
    seen: set[str] = set()
    for lineno, line in enumerate(q_bytes.decode("utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"questions.txt line {lineno}"
        if line.startswith("@"):
            family = line[1:].strip()
            if family not in families:
                raise BankError(f"{where}: unknown family {family!r} (add it to families.json)")
            continue
        parts = [p.strip() for p in line.split("|")]
        if family is None or len(parts) != 3:
            raise BankError(f"{where}: expected '<competency> | <zh> | <en>' after an @family")
        comp, zh, en = parts
        if comp not in COMPETENCIES or comp == "other":
            raise BankError(f"{where}: unknown competency {comp!r}")
        if not has_cjk(zh) or has_cjk(en) or not en:
            raise BankError(f"{where}: the second column must be Chinese, the third English")
        for text in (zh, en):
            if text in seen:
                raise BankError(f"{where}: duplicate question {text!r}")
            seen.add(text)
        counts[family] = counts.get(family, 0) + 1
        questions.append(BankQuestion(f"{family}-{counts[family]}", family, comp, zh, en))
    version = hashlib.sha256(fam_bytes + b"\0" + q_bytes).hexdigest()[:12]
    return Bank(families=families, questions=tuple(questions), version=version)


# --------------------------------------------------------------------------------------------
# matching a job title to families
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9][a-z0-9+#.]*")


def _stem(token: str) -> str:
    token = token.rstrip(".")
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def _tokens(text: str) -> list[str]:
    return [_stem(t) for t in _TOKEN.findall(text)]


def _normalise(title: str) -> str:
    t = unicodedata.normalize("NFKC", title).lower()
    return re.sub(r"[\s\-_/\\,;:()（）【】\[\]、，。·|&]+", " ", t).strip()


@dataclass(frozen=True)
class _Keyword:
    family: str
    tokens: tuple[str, ...]  # latin keywords, stemmed tokens
    chars: str  # Chinese keywords
    weight: float  # its length, halved for '~' generic keywords


class JobMatcher:
    """Free-text job title → job families, best first (``("general",)`` when none match)."""

    def __init__(self, families: dict[str, Family], *, fuzzy: float = 0.82) -> None:
        self.fuzzy = fuzzy
        kws: list[_Keyword] = []
        for fam in families.values():
            for raw in (*fam.zh, *fam.en):
                generic = raw.startswith("~")
                word = _normalise(raw.lstrip("~"))
                if not word:
                    continue
                scale = 0.5 if generic else 1.0
                if has_cjk(word):
                    kws.append(_Keyword(fam.id, (), word.replace(" ", ""), len(word) * scale))
                else:
                    toks = tuple(_tokens(word))
                    if toks:
                        weight = len("".join(toks)) * scale
                        kws.append(_Keyword(fam.id, toks, "", weight))
        self._keywords = tuple(kws)

    def scores(self, title: str) -> dict[str, float]:
        """Each matching family's score: the weight of its best keyword. Fuzzy matches (x0.8)
        are tried only when no keyword matches exactly."""
        norm = _normalise(title)
        compact = norm.replace(" ", "")
        toks = _tokens(norm)
        for fuzzy in (False, True):  # typos count only when nothing matches exactly
            best: dict[str, float] = {}
            for kw in self._keywords:
                s = self._score(kw, compact, toks, fuzzy)
                if s > best.get(kw.family, 0.0):
                    best[kw.family] = s
            if best:
                return best
        return {}

    def _score(self, kw: _Keyword, compact: str, toks: list[str], fuzzy: bool) -> float:
        if kw.chars:
            if kw.chars in compact:
                return kw.weight
            n = len(kw.chars)
            if not fuzzy:
                return 0.0
            if n >= 3:  # a typo in a longer Chinese keyword: compare same-length windows
                for i in range(len(compact) - n + 1):
                    window = compact[i : i + n]
                    if difflib.SequenceMatcher(None, kw.chars, window).ratio() >= 0.66:
                        return kw.weight * 0.8
            return 0.0
        k = len(kw.tokens)
        windows = [tuple(toks[i : i + k]) for i in range(len(toks) - k + 1)]
        if kw.tokens in windows:
            return kw.weight
        if not fuzzy:
            return 0.0
        phrase = " ".join(kw.tokens)
        if len(phrase) >= 5:
            for w in windows:
                if difflib.SequenceMatcher(None, phrase, " ".join(w)).ratio() >= self.fuzzy:
                    return kw.weight * 0.8
        return 0.0

    def match(self, title: str, *, limit: int = 2, ratio: float = 0.6) -> tuple[str, ...]:
        """The best family, plus others scoring at least ``ratio`` of it (``limit`` in all)."""
        scores = self.scores(title)
        scores.pop(GENERAL, None)
        if not scores:
            return (GENERAL,)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        top = ranked[0][1]
        return tuple(f for f, s in ranked[:limit] if s >= ratio * top)


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------


def sample(
    bank: Bank,
    families: Sequence[str],
    count: int,
    *,
    language: str,
    seed: int,
    exclude: Collection[str] = (),
) -> list[BankQuestion]:
    """``count`` distinct questions mixing competencies; the same arguments, the same list.

    Family questions come before general ones of the same competency; ``exclude`` (bank ids or
    texts in either language) are never drawn. Fewer come back only if the bank runs dry.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}")
    rng = random.Random(seed)
    banned = set(exclude)
    fams = [f for f in families if f != GENERAL and f in bank.families]
    pools: dict[str, list[BankQuestion]] = {}
    for comp in COMPETENCIES:
        own: list[BankQuestion] = []
        for fam in fams:
            part = [q for q in bank.of_family(fam) if q.competency == comp]
            rng.shuffle(part)
            own += part
        general = [q for q in bank.of_family(GENERAL) if q.competency == comp]
        rng.shuffle(general)
        pools[comp] = [q for q in own + general if not ({q.id, q.zh, q.en} & banned)]
    if len(fams) > 1:  # interleave the families' technical questions
        tech = pools["technical"]
        by_fam = [[q for q in tech if q.family == f] for f in fams]
        pools["technical"] = [q for group in _zip_longest(by_fam) for q in group]
    out: list[BankQuestion] = []
    used: set[str] = set()
    slot = 0
    while len(out) < count and any(pools.values()):
        comp = PLAN[slot % len(PLAN)]
        slot += 1
        pool = pools.get(comp) or []
        while pool and pool[0].id in used:
            pool.pop(0)
        if not pool:
            continue
        q = pool.pop(0)
        used.add(q.id)
        out.append(q)
    return out


def _zip_longest(groups: list[list[BankQuestion]]) -> list[list[BankQuestion]]:
    n = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(n)]


class BankQuestions:
    """The offline default engine (no network, no weights)."""

    name = "bank"

    def __init__(self, *, bank_dir: str | None = None, max_count: int = 20) -> None:
        self.bank = load_bank(bank_dir)
        self.matcher = JobMatcher(self.bank.families)
        self.capabilities = QuestionCapabilities(max_count=max_count)

    def generate(
        self,
        job: str,
        count: int,
        *,
        language: str,
        seed: int,
        exclude: Collection[str] = (),
    ) -> QuestionSet:
        families = self.matcher.match(job)
        picked = sample(self.bank, families, count, language=language, seed=seed, exclude=exclude)
        questions = tuple(
            Question(
                text=q.text(language),
                language=language,
                competency=q.competency,
                family=q.family,
                id=q.id,
                suggested_s=SUGGESTED_S[q.competency],
            )
            for q in picked
        )
        opts = QuestionOptions(job, count, language, seed, tuple(exclude))
        return QuestionSet(
            questions, opts, self.name, families, meta={"bank_version": self.bank.version}
        )
