"""The shared LLM client (engines/llm_client.py): the key stays secret, the reply text is found,
and a service that is not there gives a reason instead of an exception. The request/retry loop
itself is tested through its three users against local servers (test_questions.py,
test_delivery.py, test_expression.py)."""

from __future__ import annotations

import socket

import pytest

from digihuman.engines.llm_client import BadAnswer, LLMClient, openai_content, parse_json


def test_the_key_is_a_secret() -> None:
    c = LLMClient(base_url="http://127.0.0.1:9/v1/", api_key="sk-very-secret", model="m")
    assert c.base_url == "http://127.0.0.1:9/v1"
    assert "sk-very-secret" not in repr(c) and "sk-very-secret" not in str(vars(c))
    assert c.headers()["Authorization"] == "Bearer sk-very-secret"
    assert "Authorization" not in LLMClient(base_url="http://x").headers()


def test_reply_text_and_json() -> None:
    assert openai_content({"choices": [{"message": {"content": "{}"}}]}) == "{}"
    with pytest.raises(BadAnswer, match="not a string"):
        openai_content({"choices": [{"message": {"content": None}}]})
    assert parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    with pytest.raises(BadAnswer, match="not JSON"):
        parse_json("no json")


def test_unreachable_service_gives_a_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = LLMClient(base_url=f"http://127.0.0.1:{port}", retries=1, retry_backoff_s=0)
    reply = c.chat([{"role": "user", "content": "hi"}], lambda d: d, temperature=0)
    assert reply.value is None and reply.attempts == 2 and "Connect" in (reply.error or "")
    assert c.chat_body([], temperature=0)["response_format"] == {"type": "json_object"}
