"""Network question engines: an OpenAI-compatible chat endpoint and a Dify chat-messages app.

Both ask for JSON ``{"questions": [{"text": ..., "competency": ...}, ...]}`` and check the
answer against that schema (right count, right language, no repeats, sane length). A failed
request, a timeout or an answer that fails the check is retried ``retries`` times; then the
bank answers instead and the set records why (``QuestionSet.fallback``). So a room always gets
its questions, and the log says when the service let it down.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from digihuman.engines.llm_client import BadAnswer, LLMClient, openai_content, parse_json

from .base import (
    COMPETENCIES,
    SUGGESTED_S,
    Question,
    QuestionCapabilities,
    QuestionOptions,
    QuestionSet,
    has_cjk,
)

__all__ = [  # BadAnswer and parse_json live in llm_client; importable from here as before
    "SCHEMA",
    "BadAnswer",
    "DifyQuestions",
    "OpenAIChatQuestions",
    "build_prompt",
    "check_answer",
    "parse_json",
]

log = logging.getLogger(__name__)

MIN_CHARS = 4
MAX_CHARS = 400
SCHEMA = {
    "type": "object",
    "required": ["questions"],
    "properties": {
        "questions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": {"type": "string", "minLength": MIN_CHARS, "maxLength": MAX_CHARS},
                    "competency": {"enum": list(COMPETENCIES)},
                },
            },
        }
    },
}
"""The answer's JSON schema (documentation; :func:`check_answer` enforces it and more)."""


def build_prompt(job: str, count: int, language: str, exclude: Collection[str]) -> str:
    lang = "Simplified Chinese" if language == "zh" else "English"
    comps = ", ".join(c for c in COMPETENCIES if c != "other")
    lines = [
        f"Write {count} distinct job-interview questions for the position: {job!r}.",
        f"Write every question in {lang}. Mix competencies ({comps}); most should be specific",
        "to the position. One question per item, one or two sentences each, no numbering.",
        'Answer with JSON only: {"questions": [{"text": "...", "competency": "technical"}]}.',
    ]
    if exclude:
        lines.append("Do not repeat any of these questions: " + json.dumps(list(exclude)))
    return "\n".join(lines)


def check_answer(
    data: Any, count: int, language: str, exclude: Collection[str] = ()
) -> list[tuple[str, str]]:
    """(text, competency) pairs from a parsed reply, or :class:`BadAnswer` saying what is wrong.

    Accepted: ``{"questions": [...]}`` or a bare list; items objects with ``text`` (or
    ``question``) and an optional ``competency``, or plain strings.
    """
    items = data.get("questions") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise BadAnswer('expected {"questions": [...]}')
    banned = {e.strip().lower() for e in exclude}
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, item in enumerate(items):
        text: Any
        if isinstance(item, str):
            text, comp = item, "other"
        elif isinstance(item, dict):
            text = item.get("text", item.get("question"))
            comp = str(item.get("competency") or "other")
        else:
            raise BadAnswer(f"questions[{n}] is neither an object nor a string")
        if not isinstance(text, str):
            raise BadAnswer(f"questions[{n}].text is not a string")
        text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)  # no control characters (NUL)
        text = re.sub(r"^\s*(?:\d+[.)、]|[-*•])\s*", "", text).strip()
        if not MIN_CHARS <= len(text) <= MAX_CHARS:
            raise BadAnswer(f"questions[{n}] has {len(text)} characters (allowed 4-400)")
        if (language == "zh") != has_cjk(text):
            raise BadAnswer(f"questions[{n}] is not in {language}: {text[:40]!r}")
        key = text.lower()
        if key in seen or key in banned:
            continue  # a repeat: drop it (the count check below decides)
        seen.add(key)
        out.append((text, comp if comp in COMPETENCIES else "other"))
    if len(out) < count:
        raise BadAnswer(f"{len(out)} usable questions, {count} asked for")
    return out[:count]


class _ChatEngine:
    """Shared loop: ask (:class:`~digihuman.engines.llm_client.LLMClient`), check, fall back to
    the bank."""

    name = "chat"
    path = "/chat/completions"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None = None,
        timeout_s: float = 20.0,
        retries: int = 1,
        temperature: float = 0.7,
        max_count: int = 20,
        bank_dir: str | None = None,
        retry_backoff_s: float = 0.2,
        model: str | None = None,
        json_mode: bool = True,
    ) -> None:
        from digihuman.errors import InputError

        if not base_url:
            raise InputError(
                f"the {self.name} question engine needs a base URL: set "
                f"DIGIHUMAN_QUESTIONS__{self.name.upper()}_BASE_URL"
            )
        from .bank import BankQuestions

        self.llm = LLMClient(
            base_url=base_url,
            model=model,
            api_key=api_key,
            timeout_s=timeout_s,
            retries=retries,
            retry_backoff_s=retry_backoff_s,
            json_mode=json_mode,
            label=f"{self.name} questions",
        )
        self.temperature = float(temperature)
        self.fallback = BankQuestions(bank_dir=bank_dir, max_count=max_count)
        self.capabilities = QuestionCapabilities(max_count=max_count, needs_network=True)

    def _body(self, prompt: str, job: str, count: int, language: str, seed: int) -> dict[str, Any]:
        raise NotImplementedError

    def _content(self, response: Any) -> str:
        """The reply text in the service's JSON response."""
        return openai_content(response)

    def generate(
        self,
        job: str,
        count: int,
        *,
        language: str,
        seed: int,
        exclude: Collection[str] = (),
    ) -> QuestionSet:
        prompt = build_prompt(job, count, language, exclude)
        opts = QuestionOptions(job, count, language, seed, tuple(exclude))
        families = self.fallback.matcher.match(job)

        def check(data: Any) -> list[tuple[str, str]]:
            return check_answer(data, count, language, exclude)

        body = self._body(prompt, job, count, language, seed)
        reply = self.llm.ask(self.path, body, check, content=self._content)
        if reply.value is not None:
            qs = tuple(
                Question(t, language, c, "generated", None, SUGGESTED_S[c]) for t, c in reply.value
            )
            return QuestionSet(qs, opts, self.name, families, meta={"attempts": reply.attempts})
        log.warning("%s questions failed (%s); using the offline bank", self.name, reply.error)
        fb = self.fallback.generate(job, count, language=language, seed=seed, exclude=exclude)
        return replace(fb, fallback=f"{self.name}: {reply.error}")


class OpenAIChatQuestions(_ChatEngine):
    """``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp server, Ollama, ...)."""

    name = "openai"

    def __init__(self, *, model: str = "gpt-4o-mini", json_mode: bool = True, **kw: Any) -> None:
        super().__init__(model=model, json_mode=json_mode, **kw)

    def _body(self, prompt: str, job: str, count: int, language: str, seed: int) -> dict[str, Any]:
        messages = [
            {"role": "system", "content": "You write job-interview questions as JSON."},
            {"role": "user", "content": prompt},
        ]
        return self.llm.chat_body(messages, temperature=self.temperature, seed=seed)


class DifyQuestions(_ChatEngine):
    """``POST {base_url}/chat-messages`` of a Dify app (blocking mode), as the seed used.

    The app receives ``inputs`` ``{"job", "count", "language"}`` and the prompt as ``query``;
    its ``answer`` must be the JSON above.
    """

    name = "dify"
    path = "/chat-messages"

    def __init__(self, *, user: str = "digihuman", **kw: Any) -> None:
        super().__init__(**kw)
        self.user = user

    def _body(self, prompt: str, job: str, count: int, language: str, seed: int) -> dict[str, Any]:
        return {
            "inputs": {"job": job, "count": count, "language": language},
            "query": prompt,
            "response_mode": "blocking",
            "conversation_id": "",
            "user": self.user,
        }

    def _content(self, response: Any) -> str:
        answer = response["answer"]
        if not isinstance(answer, str):
            raise BadAnswer("answer is not a string")
        return answer
