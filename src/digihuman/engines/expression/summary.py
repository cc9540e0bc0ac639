"""An optional written summary of an answer's expression feedback by a vision LLM behind an
OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...).

The model gets the aggregates (no timeline) and a few sampled frames as JPEG data URLs, and must
answer JSON ``{"summary": "<2-3 sentences>", "suggestion": "<one concrete suggestion>"}`` in
the asked language. The answer is checked; a malformed or slow answer is retried, then the
summary is left out with the reason (the analysis itself never fails for it). The request,
retry and JSON parsing are :class:`~digihuman.engines.llm_client.LLMClient`'s.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import cv2
import numpy as np

from digihuman.engines.llm_client import BadAnswer, LLMClient

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


class BadSummary(BadAnswer):
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
        self.llm = LLMClient(
            base_url=base_url,
            model=model,
            api_key=api_key,
            timeout_s=timeout_s,
            retries=retries,
            label="expression summary",
        )
        self.model = model

    @property
    def base_url(self) -> str:
        return self.llm.base_url

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
        content: list[dict[str, Any]] = [{"type": "text", "text": self._prompt(summary, language)}]
        pick = np.linspace(0, len(frames) - 1, min(4, len(frames))).round().astype(int)
        content += [
            {"type": "image_url", "image_url": {"url": jpeg_data_url(frames[i])}}
            for i in (pick if frames else [])
        ]
        messages = [{"role": "user", "content": content}]
        reply = self.llm.chat(messages, lambda obj: check_summary(obj, language), temperature=0.3)
        if reply.value is None:
            return {"error": reply.error, "model": self.model}
        return {**reply.value, "model": self.model, "attempts": reply.attempts}
