"""OpenAI-compatible transcription endpoint: ``POST {base_url}/v1/audio/transcriptions``.

The audio goes up as a 16 kHz WAV (multipart ``file``) with ``model``, optional ``language`` and
``response_format=verbose_json``; the answer's text, language and segments become the transcript.
Servers that answer only ``{"text": ...}`` work too (no segments then).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digihuman.engines.tts.http import SpeechServiceError, api_url, httpx_module, service_error
from digihuman.types import SAMPLE_RATE, ASRCapabilities, Transcript, TranscriptSegment

from .common import check_audio, duration_s, is_silent, join_text, language_code, to_simplified


def parse_transcription(payload: dict[str, Any], language: str | None) -> tuple[str, str, tuple]:
    """(text, language code, segments) from a verbose_json (or plain json) answer."""
    lang = language_code(payload.get("language")) or (language or "")
    segs = []
    for s in payload.get("segments") or ():
        text = str(s.get("text", "")).strip()
        if lang == "zh":
            text = to_simplified(text)
        if text:
            segs.append(
                TranscriptSegment(float(s.get("start", 0.0)), float(s.get("end", 0.0)), text)
            )
    text = str(payload.get("text", "")).strip()
    if lang == "zh":
        text = to_simplified(text)
    if not text and segs:
        text = join_text([s.text for s in segs], lang)
    return text, lang, tuple(segs)


class OpenAIASR:
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str = "whisper-1",
        api_key: str | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        if not base_url:
            raise SpeechServiceError(
                "asr engine 'openai' needs a server: set asr.openai_base_url "
                "(DIGIHUMAN_ASR__OPENAI_BASE_URL), e.g. https://api.openai.com/v1"
            )
        self._httpx = httpx_module()
        self.url = api_url(base_url, "audio/transcriptions")
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.capabilities = ASRCapabilities(languages=("zh", "en"), needs_network=True)

    def request_fields(self, language: str | None) -> dict[str, str]:
        fields = {"model": self.model, "response_format": "verbose_json"}
        if language:
            fields["language"] = language
        return fields

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        from digihuman.engines.tts.cosyvoice import wav_bytes

        x = check_audio(audio)
        options: dict[str, Any] = {"engine": self.name, "model": self.model, "language": language}
        if is_silent(x):
            return Transcript("", language or "", (), duration_s(x), options)
        httpx = self._httpx
        files = {"file": ("audio.wav", wav_bytes(x, SAMPLE_RATE), "audio/wav")}
        try:
            resp = httpx.post(
                self.url,
                data=self.request_fields(language),
                files=files,
                headers=self._headers,
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise service_error("transcription request", self.url, exc) from exc
        if resp.status_code >= 400:
            raise SpeechServiceError(
                f"transcription server {self.url} answered {resp.status_code}: {resp.text[:200]}"
            )
        try:
            payload = resp.json()
        except ValueError as exc:
            raise SpeechServiceError(
                f"transcription server {self.url} did not answer with JSON"
            ) from exc
        text, lang, segs = parse_transcription(payload, language)
        return Transcript(text, lang, segs, duration_s(x), options)
