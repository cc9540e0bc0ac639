"""An optional written summary of an answer's expression feedback by a vision LLM behind an
OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...).

The model gets the aggregates (no timeline) and a few sampled frames as JPEG data URLs, and must
answer JSON ``{"summary": "<2-3 sentences>", "suggestion": "<one concrete suggestion>"}`` in
the asked language. The answer is checked; a malformed or slow answer is retried, then the
summary is left out with the reason (the analysis itself never fails for it).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "face_visible",
    "looking_at_camera",
    "dominant_expressions",
    "smile",
    "blinks_per_minute",
    "head_movement",
    "duration_s",
)
MAX_TEXT = 600


class BadSummary(ValueError):
    pass


def jpeg_data_url(image: np.ndarray, side: int = 256) -> str:
    h, w = image.shape[:2]
    k = side / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def check_summary(obj: Any, language: str) -> dict[str, str]:
    if not isinstance(obj, dict):
        raise BadSummary("the reply is not a JSON object")
    out = {}
    for key in ("summary", "suggestion"):
        v = obj.get(key)
        if not isinstance(v, str) or not v.strip():
            raise BadSummary(f"{key!r} is missing or not a non-empty string")
        out[key] = v.strip()[:MAX_TEXT]
    if language == "zh" and not any("\u4e00" <= ch <= "\u9fff" for ch in out["summary"]):
        raise BadSummary("the summary is not in Chinese")
    return out


class VisionSummary:
    def __init__(
        self,
        *,
        base_url: str,
        model: str = "gpt-4o-mini",
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 1,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))

    def _prompt(self, summary: dict[str, Any], language: str) -> str:
        facts = {k: summary.get(k) for k in SUMMARY_KEYS}
        lang = "Chinese (简体中文)" if language == "zh" else "English"
        return (
            "You coach candidates for job interviews. Here are measurements of a candidate's "
            "video answer (shares are 0-1; looking_at_camera is the head facing the camera; "
            "head_movement in degrees per second) and a few frames of it:\n"
            f"{json.dumps(facts, ensure_ascii=False)}\n"
            f"Answer in {lang} with JSON only: "
            '{"summary": "<2-3 sentences on the candidate\'s expression, eye contact and '
            'composure>", "suggestion": "<one concrete thing to do better>"}'
        )

    def summarize(
        self, summary: dict[str, Any], frames: list[np.ndarray], *, language: str = "en"
    ) -> dict[str, Any]:
        """``{"summary", "suggestion", "model", "attempts"}``, or ``{"error"}`` on failure."""
        import httpx

        from digihuman.engines.questions.llm import BadAnswer, parse_json

        content: list[dict[str, Any]] = [{"type": "text", "text": self._prompt(summary, language)}]
        pick = np.linspace(0, len(frames) - 1, min(4, len(frames))).round().astype(int)
        content += [
            {"type": "image_url", "image_url": {"url": jpeg_data_url(frames[i])}}
            for i in (pick if frames else [])
        ]
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0.3,
            "response_format": {"type": "json_object"},
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        reason = ""
        with httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client:
            for attempt in range(1 + self.retries):
                if attempt:
                    time.sleep(0.2 * attempt)
                try:
                    r = client.post(f"{self.base_url}/chat/completions", json=body, headers=headers)
                    r.raise_for_status()
                    text = r.json()["choices"][0]["message"]["content"]
                    if not isinstance(text, str):
                        raise BadSummary("choices[0].message.content is not a string")
                    got = check_summary(parse_json(text), language)
                except httpx.TimeoutException:
                    reason = f"timed out after {self.timeout_s:g} s"
                except httpx.HTTPStatusError as e:
                    reason = f"HTTP {e.response.status_code}"
                except httpx.HTTPError as e:
                    reason = f"{type(e).__name__}: {e}"
                except (BadAnswer, BadSummary, KeyError, IndexError, TypeError, ValueError) as e:
                    reason = f"malformed answer: {e}"
                else:
                    return {**got, "model": self.model, "attempts": attempt + 1}
                log.warning("expression summary, attempt %d: %s", attempt + 1, reason)
        return {"error": reason, "model": self.model}
