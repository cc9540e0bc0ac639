"""Content evaluation of an answer by an OpenAI-compatible chat model (optional).

The model is asked for JSON ``{"relevance": 0-10, "structure": {"star": [...], "comment": "..."},
"score": 0-100, "suggestion": "..."}`` and the reply is checked (:func:`check_evaluation`):
numbers in range, STAR parts from the four names, a non-empty suggestion in the room's
language. A failed request, a timeout or a reply that fails the check is retried ``retries``
times; then the answer has no evaluation and records why (the report falls back to its
rule-based suggestions). The same client as the question engines
(:class:`~digihuman.engines.llm_client.LLMClient`: ``POST {base_url}/chat/completions``, JSON
mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from digihuman.config import QuestionsSettings, RoomsSettings
from digihuman.engines.llm_client import BadAnswer, LLMClient

STAR = ("situation", "task", "action", "result")
MAX_SUGGESTION = 400
MAX_ANSWER_CHARS = 6000  # the transcript sent to the model is cut here

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["relevance", "structure", "score", "suggestion"],
    "properties": {
        "relevance": {"type": "integer", "minimum": 0, "maximum": 10},
        "structure": {
            "type": "object",
            "required": ["star"],
            "properties": {
                "star": {"type": "array", "items": {"enum": list(STAR)}},
                "comment": {"type": "string"},
            },
        },
        "score": {"type": "integer", "minimum": 0, "maximum": 100},
        "suggestion": {"type": "string", "minLength": 4, "maxLength": MAX_SUGGESTION},
    },
}
"""The reply's JSON schema (documentation; :func:`check_evaluation` enforces it)."""

_CJK = re.compile(r"[\u4e00-\u9fff]")


def _number(data: dict[str, Any], key: str, low: int, high: int) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadAnswer(f"{key} is not a number: {v!r}")
    if not low <= v <= high or (isinstance(v, float) and v != int(v)):
        raise BadAnswer(f"{key} must be a whole number in {low}..{high}, not {v!r}")
    return int(v)


def check_evaluation(data: Any, language: str) -> dict[str, Any]:
    """The evaluation from a parsed reply, or :class:`BadAnswer` saying what is wrong."""
    if not isinstance(data, dict):
        raise BadAnswer("expected a JSON object")
    relevance = _number(data, "relevance", 0, 10)
    score = _number(data, "score", 0, 100)
    structure = data.get("structure")
    if not isinstance(structure, dict) or not isinstance(structure.get("star"), list):
        raise BadAnswer('structure must be {"star": [...], "comment": "..."}')
    star = []
    for part in structure["star"]:
        name = str(part).strip().lower()
        if name not in STAR:
            raise BadAnswer(f"structure.star holds {part!r}; use {', '.join(STAR)}")
        if name not in star:
            star.append(name)
    comment = structure.get("comment", "")
    if not isinstance(comment, str):
        raise BadAnswer("structure.comment is not a string")
    suggestion = data.get("suggestion")
    if not isinstance(suggestion, str):
        raise BadAnswer("suggestion is not a string")
    suggestion = re.sub(r"[\x00-\x1f\x7f]+", " ", suggestion).strip()
    if not 4 <= len(suggestion) <= MAX_SUGGESTION:
        raise BadAnswer(f"suggestion has {len(suggestion)} characters (allowed 4-400)")
    if (language == "zh") != bool(_CJK.search(suggestion)):
        raise BadAnswer(f"the suggestion is not in {language}: {suggestion[:40]!r}")
    return {
        "relevance": relevance,
        "structure": {
            "star": [p for p in STAR if p in star],
            "comment": re.sub(r"[\x00-\x1f\x7f]+", " ", comment).strip()[:MAX_SUGGESTION],
        },
        "score": score,
        "suggestion": suggestion,
    }


def build_prompt(question: str, answer: str, language: str, competency: str) -> str:
    lang = "Simplified Chinese" if language == "zh" else "English"
    return "\n".join(
        [
            "You assess one answer in a job interview.",
            f"Question ({competency}): {question}",
            f"Candidate's answer (speech transcript): {answer[:MAX_ANSWER_CHARS]}",
            "Rate relevance to the question 0-10, list which STAR parts (situation, task,",
            "action, result) the answer contains, give an overall score 0-100, and one",
            f"concrete, actionable suggestion for this candidate, written in {lang}.",
            'Answer with JSON only: {"relevance": 7, "structure": {"star": ["situation", '
            '"action"], "comment": "..."}, "score": 65, "suggestion": "..."}',
        ]
    )


@dataclass(frozen=True)
class Evaluation:
    """An evaluation (``result``), or None with the reason it is missing (``error``)."""

    result: dict[str, Any] | None
    error: str | None
    attempts: int
    model: str


class ContentEvaluator:
    """``POST {base_url}/chat/completions``; ask, check, retry; never raises on the service."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str = "gpt-4o-mini",
        api_key: str | None = None,
        timeout_s: float = 20.0,
        retries: int = 1,
        json_mode: bool = True,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.llm = LLMClient(
            base_url=base_url,
            model=model,
            api_key=api_key,
            timeout_s=timeout_s,
            retries=retries,
            retry_backoff_s=retry_backoff_s,
            json_mode=json_mode,
            label="evaluation",
        )
        self.model = model

    def evaluate(
        self, question: str, answer: str, *, language: str, competency: str = "other"
    ) -> Evaluation:
        messages = [
            {"role": "system", "content": "You assess job-interview answers as JSON."},
            {"role": "user", "content": build_prompt(question, answer, language, competency)},
        ]
        reply = self.llm.chat(
            messages, lambda data: check_evaluation(data, language), temperature=0.2
        )
        return Evaluation(reply.value, reply.error, reply.attempts, self.model)


def create_evaluator(rooms: RoomsSettings, questions: QuestionsSettings) -> ContentEvaluator | None:
    """The evaluator the settings ask for: ``rooms.evaluation`` off → None; auto → one when
    ``questions.openai_base_url`` is set; openai → one (the base URL is then required)."""
    mode = rooms.evaluation
    if mode == "off" or (mode == "auto" and not questions.openai_base_url):
        return None
    if mode not in ("auto", "openai"):
        from digihuman.errors import InputError

        raise InputError(f"rooms.evaluation is {mode!r}; use auto, openai or off")
    if not questions.openai_base_url:
        from digihuman.errors import InputError

        raise InputError(
            "rooms.evaluation=openai needs an endpoint: set DIGIHUMAN_QUESTIONS__OPENAI_BASE_URL"
        )
    key = questions.openai_api_key.get_secret_value() if questions.openai_api_key else None
    return ContentEvaluator(
        base_url=questions.openai_base_url,
        model=questions.openai_model,
        api_key=key,
        timeout_s=questions.timeout_s,
        retries=questions.retries,
        json_mode=questions.openai_json_mode,
    )
