"""Interview question engines: bank (offline default), openai, dify, fake.

* :func:`create_questions` builds the engine a :class:`~digihuman.config.QuestionsSettings`
  names, with plain keyword arguments (:func:`questions_kwargs`).
* The contract and data types live in :mod:`.base`; the bank, matcher and sampler in
  :mod:`.bank`; the network engines in :mod:`.llm`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    QUESTIONS,
    Question,
    QuestionEngine,
    QuestionSet,
    detect_language,
    normalise_language,
)

if TYPE_CHECKING:
    from digihuman.config import QuestionsSettings


def questions_kwargs(settings: QuestionsSettings, engine: str | None = None) -> dict[str, Any]:
    s = settings
    name = engine or s.engine
    common: dict[str, Any] = {"max_count": s.max_count}
    if name in ("openai", "dify"):
        common.update(timeout_s=s.timeout_s, retries=s.retries, temperature=s.temperature)
    if name == "openai":
        key = s.openai_api_key.get_secret_value() if s.openai_api_key else None
        return {
            **common,
            "base_url": s.openai_base_url,
            "model": s.openai_model,
            "api_key": key,
            "json_mode": s.openai_json_mode,
        }
    if name == "dify":
        key = s.dify_api_key.get_secret_value() if s.dify_api_key else None
        return {**common, "base_url": s.dify_base_url, "api_key": key}
    return common


def create_questions(settings: QuestionsSettings, engine: str | None = None) -> QuestionEngine:
    """Build the question engine the settings name (``engine`` overrides ``settings.engine``)."""
    name = engine or settings.engine
    return QUESTIONS.create(name, **questions_kwargs(settings, name))


__all__ = [
    "QUESTIONS",
    "Question",
    "QuestionEngine",
    "QuestionSet",
    "create_questions",
    "detect_language",
    "normalise_language",
    "questions_kwargs",
]
