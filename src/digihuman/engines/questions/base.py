"""The question-engine contract: a job title and a count in, a :class:`QuestionSet` out.

One required method, ``generate``; engines are synchronous (the API calls them through
``asyncio.to_thread``) and take plain keyword arguments. The registry builds them by name.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from digihuman.engines.base import Registry, lazy

COMPETENCIES = (
    "technical",
    "behavioural",
    "situational",
    "motivation",
    "teamwork",
    "communication",
    "problem_solving",
    "learning",
    "leadership",
    "other",  # LLM questions without (or with an unknown) competency
)
"""The competency tags; ``other`` is only used for generated questions."""

LANGUAGES = ("zh", "en")

SUGGESTED_S = {
    "technical": 120,
    "behavioural": 120,
    "situational": 90,
    "motivation": 60,
    "teamwork": 90,
    "communication": 90,
    "problem_solving": 120,
    "learning": 60,
    "leadership": 120,
    "other": 90,
}
"""A suggested answer length per competency, in seconds (the answer report compares with it)."""

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def detect_language(job: str) -> str:
    """The language a job title is written in: ``zh`` when it has any Chinese character."""
    return "zh" if has_cjk(job) else "en"


def normalise_language(lang: str | None) -> str | None:
    """``zh``/``zh-CN``/``cn``/``chinese`` → ``zh``; ``en``/``en-US``/``english`` → ``en``."""
    if lang is None or not lang.strip():
        return None
    low = lang.strip().lower().replace("_", "-")
    if low in ("zh", "cn", "chinese", "mandarin", "中文") or low.startswith("zh-"):
        return "zh"
    if low in ("en", "english", "英文") or low.startswith("en-"):
        return "en"
    from digihuman.errors import InputError

    raise InputError(f"unsupported language {lang!r}; use zh or en")


@dataclass(frozen=True)
class Question:
    text: str
    language: str
    competency: str
    family: str = "general"  # the job family it was written for (bank), or "generated"
    id: str | None = None  # the bank id (``software-3``); None for generated questions
    suggested_s: int = 90


@dataclass(frozen=True)
class QuestionOptions:
    """What a set was asked for (results carry the options that made them)."""

    job: str
    count: int
    language: str
    seed: int
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuestionSet:
    questions: tuple[Question, ...]
    options: QuestionOptions
    engine: str  # the engine that produced the questions (``bank`` after a fallback)
    families: tuple[str, ...] = ("general",)  # matched job families, best first
    fallback: str | None = None  # why a network engine fell back to the bank
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [q.text for q in self.questions]


@dataclass(frozen=True)
class QuestionCapabilities:
    languages: tuple[str, ...] = LANGUAGES
    max_count: int = 20
    needs_network: bool = False


@runtime_checkable
class QuestionEngine(Protocol):
    """Interview questions for a free-text job title."""

    name: str
    capabilities: QuestionCapabilities

    def generate(
        self,
        job: str,
        count: int,
        *,
        language: str,
        seed: int,
        exclude: Collection[str] = (),
    ) -> QuestionSet:
        """``count`` distinct questions in ``language``; ``exclude`` lists texts or bank ids
        the set must not contain (questions a room already has). The same arguments give the
        same set (for the bank; a network engine is as reproducible as its service)."""
        ...


QUESTIONS: Registry[QuestionEngine] = Registry("questions")
QUESTIONS.register("bank", lazy("digihuman.engines.questions.bank", "BankQuestions"))
QUESTIONS.register("openai", lazy("digihuman.engines.questions.llm", "OpenAIChatQuestions"))
QUESTIONS.register("dify", lazy("digihuman.engines.questions.llm", "DifyQuestions"))
QUESTIONS.register("fake", lazy("digihuman.engines.questions.fake", "FakeQuestions"))
