"""One small client for the LLM services the engines ask for JSON: an OpenAI-compatible
``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...) or any JSON-over-HTTP
chat API (a Dify app's ``/chat-messages``).

:meth:`LLMClient.ask` posts a body, takes the reply text out of the response, finds the JSON in
it (:func:`parse_json`), hands that to the caller's check and returns what the check returns. A
failed request, a timeout or a reply that fails the check is retried ``retries`` times with a
short backoff; the client never raises for the service: it returns :class:`LLMReply` with the
value, or with the last reason (``"timed out after 20 s"``, ``"HTTP 500"``, ``"malformed answer:
..."``, ``"ConnectError: ..."``). Used by the question engines (``questions/llm.py``), the
expression summary (``expression/summary.py``) and the answers' content evaluation
(``rooms/evaluate.py``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import SecretStr

log = logging.getLogger(__name__)

T = TypeVar("T")


class BadAnswer(ValueError):
    """The service answered, but not with what the schema asks for."""


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


def openai_content(response: Any) -> str:
    """The reply text of an OpenAI-style chat completion (``choices[0].message.content``)."""
    content = response["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise BadAnswer("choices[0].message.content is not a string")
    return content


@dataclass(frozen=True)
class LLMReply(Generic[T]):
    """What the check made of the reply (``value``), or None with the last reason (``error``)."""

    value: T | None
    error: str | None
    attempts: int


class LLMClient:
    """``POST {base_url}{path}``; extract, parse, check, retry. Plain keyword arguments; the key
    is kept as a :class:`~pydantic.SecretStr` (never in a repr or a log line)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        timeout_s: float = 20.0,
        retries: int = 1,
        retry_backoff_s: float = 0.2,
        json_mode: bool = True,
        label: str = "llm",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.retry_backoff_s = float(retry_backoff_s)
        self.json_mode = json_mode
        self.label = label

    def __repr__(self) -> str:
        return f"LLMClient({self.base_url!r}, model={self.model!r}, label={self.label!r})"

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = self.api_key.get_secret_value() if self.api_key else ""
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def chat_body(
        self, messages: list[dict[str, Any]], *, temperature: float, **extra: Any
    ) -> dict[str, Any]:
        """A ``/chat/completions`` body: ``model``, ``messages``, ``temperature``, ``extra``
        (e.g. ``seed``) and, in JSON mode, ``response_format: json_object``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            **extra,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def chat(
        self,
        messages: list[dict[str, Any]],
        check: Callable[[Any], T],
        *,
        temperature: float,
        **extra: Any,
    ) -> LLMReply[T]:
        """``POST /chat/completions`` with :meth:`chat_body`; the reply text is
        ``choices[0].message.content``."""
        body = self.chat_body(messages, temperature=temperature, **extra)
        return self.ask("/chat/completions", body, check)

    def ask(
        self,
        path: str,
        body: dict[str, Any],
        check: Callable[[Any], T],
        *,
        content: Callable[[Any], str] = openai_content,
    ) -> LLMReply[T]:
        """Post ``body`` to ``path``; ``content`` takes the reply text out of the JSON response,
        ``check`` turns the parsed reply into the value or raises :class:`BadAnswer`."""
        try:
            import httpx
        except ImportError as e:  # pragma: no cover - httpx ships with the service extra
            from digihuman.errors import missing_extra

            raise missing_extra("httpx", "service") from e

        url = f"{self.base_url}{path}"
        headers = self.headers()
        reason = ""
        n = 0
        with httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client:
            for n in range(1, 2 + self.retries):
                if n > 1:
                    time.sleep(self.retry_backoff_s * (n - 1))
                try:
                    r = client.post(url, json=body, headers=headers)
                    r.raise_for_status()
                    value = check(parse_json(content(r.json())))
                except httpx.TimeoutException:
                    reason = f"timed out after {self.timeout_s:g} s"
                except httpx.HTTPStatusError as e:
                    reason = f"HTTP {e.response.status_code}"
                except httpx.HTTPError as e:
                    reason = f"{type(e).__name__}: {e}"
                except (BadAnswer, KeyError, IndexError, TypeError, ValueError) as e:
                    reason = f"malformed answer: {e}"
                else:
                    return LLMReply(value, None, n)
                log.warning("%s, attempt %d/%d: %s", self.label, n, 1 + self.retries, reason)
        return LLMReply(None, reason, n)
