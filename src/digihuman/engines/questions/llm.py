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
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from .base import (
    COMPETENCIES,
    SUGGESTED_S,
    Question,
    QuestionCapabilities,
    QuestionOptions,
    QuestionSet,
    has_cjk,
)

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


class BadAnswer(ValueError):
    """The service answered, but not with what the schema asks for."""


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


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_json(content: str) -> Any:
    """JSON from a model's reply: plain, in a ```json fence, or the outermost {...} / [...]."""
    text = content.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        return json.loads(text)
    except ValueError:
        pass
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = text.find(open_), text.rfind(close)
        if 0 <= i < j:
            try:
                return json.loads(text[i : j + 1])
            except ValueError:
                continue
    raise BadAnswer(f"the reply is not JSON: {content[:80]!r}")


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
    """Shared loop: ask, check, retry, fall back to the bank."""

    name = "chat"

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
    ) -> None:
        from digihuman.errors import InputError

        if not base_url:
            raise InputError(
                f"the {self.name} question engine needs a base URL: set "
                f"DIGIHUMAN_QUESTIONS__{self.name.upper()}_BASE_URL"
            )
        from .bank import BankQuestions

        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.temperature = float(temperature)
        self.retry_backoff_s = retry_backoff_s
        self.fallback = BankQuestions(bank_dir=bank_dir, max_count=max_count)
        self.capabilities = QuestionCapabilities(max_count=max_count, needs_network=True)

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _ask(self, client: Any, prompt: str, job: str, count: int, language: str, seed: int) -> str:
        raise NotImplementedError

    def generate(
        self,
        job: str,
        count: int,
        *,
        language: str,
        seed: int,
        exclude: Collection[str] = (),
    ) -> QuestionSet:
        try:
            import httpx
        except ImportError as e:  # pragma: no cover - httpx ships with the service extra
            from digihuman.errors import missing_extra

            raise missing_extra("httpx", "service") from e

        prompt = build_prompt(job, count, language, exclude)
        opts = QuestionOptions(job, count, language, seed, tuple(exclude))
        families = self.fallback.matcher.match(job)
        reason = ""
        with httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client:
            for attempt in range(1 + self.retries):
                if attempt:
                    time.sleep(self.retry_backoff_s * attempt)
                try:
                    content = self._ask(client, prompt, job, count, language, seed)
                    pairs = check_answer(parse_json(content), count, language, exclude)
                except httpx.TimeoutException:
                    reason = f"timed out after {self.timeout_s:g} s"
                except httpx.HTTPStatusError as e:
                    reason = f"HTTP {e.response.status_code}"
                except httpx.HTTPError as e:
                    reason = f"{type(e).__name__}: {e}"
                except (BadAnswer, KeyError, IndexError, TypeError, ValueError) as e:
                    reason = f"malformed answer: {e}"
                else:
                    qs = tuple(
                        Question(t, language, c, "generated", None, SUGGESTED_S[c])
                        for t, c in pairs
                    )
                    return QuestionSet(
                        qs, opts, self.name, families, meta={"attempts": attempt + 1}
                    )
                log.warning(
                    "%s questions, attempt %d/%d: %s",
                    self.name,
                    attempt + 1,
                    1 + self.retries,
                    reason,
                )
        log.warning("%s questions failed (%s); using the offline bank", self.name, reason)
        fb = self.fallback.generate(job, count, language=language, seed=seed, exclude=exclude)
        return replace(fb, fallback=f"{self.name}: {reason}")


class OpenAIChatQuestions(_ChatEngine):
    """``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp server, Ollama, ...)."""

    name = "openai"

    def __init__(self, *, model: str = "gpt-4o-mini", json_mode: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = model
        self.json_mode = json_mode

    def _ask(self, client: Any, prompt: str, job: str, count: int, language: str, seed: int) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": "You write job-interview questions as JSON."},
                {"role": "user", "content": prompt},
            ],
            "temperature": self.temperature,
            "seed": seed,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        r = client.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers())
        r.raise_for_status()
        content = r.json()["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise BadAnswer("choices[0].message.content is not a string")
        return content


class DifyQuestions(_ChatEngine):
    """``POST {base_url}/chat-messages`` of a Dify app (blocking mode), as the seed used.

    The app receives ``inputs`` ``{"job", "count", "language"}`` and the prompt as ``query``;
    its ``answer`` must be the JSON above.
    """

    name = "dify"

    def __init__(self, *, user: str = "digihuman", **kw: Any) -> None:
        super().__init__(**kw)
        self.user = user

    def _ask(self, client: Any, prompt: str, job: str, count: int, language: str, seed: int) -> str:
        body = {
            "inputs": {"job": job, "count": count, "language": language},
            "query": prompt,
            "response_mode": "blocking",
            "conversation_id": "",
            "user": self.user,
        }
        r = client.post(f"{self.base_url}/chat-messages", json=body, headers=self._headers())
        r.raise_for_status()
        answer = r.json()["answer"]
        if not isinstance(answer, str):
            raise BadAnswer("answer is not a string")
        return answer
