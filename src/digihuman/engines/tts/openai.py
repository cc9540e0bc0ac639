"""OpenAI-compatible speech endpoint: ``POST {base_url}/v1/audio/speech``.

One request per sentence, the WAV (or raw PCM) response streamed and parsed as it arrives, so the
first chunk comes after the first sentence's first bytes. Works with OpenAI and with the many
self-hosted servers that copy its API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from digihuman.text import sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities

from .http import SpeechServiceError, WavStreamParser, api_url, httpx_module, service_error

log = logging.getLogger(__name__)

PCM_RATE = 24000  # OpenAI's "pcm" format: 24 kHz 16-bit mono little-endian


class OpenAITTS:
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str = "tts-1",
        api_key: str | None = None,
        voice: str = "alloy",
        response_format: str = "wav",
        sample_rate: int = PCM_RATE,
        timeout_s: float = 60.0,
        max_chars: int = 2000,
        max_sentence_chars: int = 400,
    ) -> None:
        if not base_url:
            raise SpeechServiceError(
                "tts engine 'openai' needs a server: set tts.openai_base_url "
                "(DIGIHUMAN_TTS__OPENAI_BASE_URL), e.g. https://api.openai.com/v1"
            )
        if response_format not in ("wav", "pcm"):
            raise ValueError("response_format must be 'wav' or 'pcm'")
        self._httpx = httpx_module()
        self.url = api_url(base_url, "audio/speech")
        self.model, self.voice, self.response_format = model, voice, response_format
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars
        # the rate of "wav" answers is read from each answer; chunks are resampled to this one
        self.capabilities = TTSCapabilities(
            sample_rate=sample_rate,
            languages=("zh", "en"),
            voices=(voice,),
            needs_network=True,
        )

    def request_body(self, sentence: str, voice: str | None) -> dict[str, object]:
        return {
            "model": self.model,
            "input": sentence,
            "voice": voice or self.voice,
            "response_format": self.response_format,
        }

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        from .stream import StreamResampler

        httpx = self._httpx
        rate = self.capabilities.sample_rate
        with httpx.Client(timeout=self.timeout_s, headers=self._headers) as client:
            for sentence in sentences_for_speech(text, self.max_chars, self.max_sentence_chars):
                parser = WavStreamParser(rate if self.response_format == "pcm" else None)
                res: StreamResampler | None = None
                try:
                    with client.stream(
                        "POST", self.url, json=self.request_body(sentence, voice)
                    ) as resp:
                        if resp.status_code >= 400:
                            body = resp.read().decode("utf-8", "replace")[:200]
                            raise SpeechServiceError(
                                f"speech server {self.url} answered {resp.status_code}: {body}"
                            )
                        for data in resp.iter_bytes():
                            x = parser.feed(data)
                            if not len(x):
                                continue
                            if parser.sample_rate != rate:
                                res = res or StreamResampler(parser.sample_rate or rate, rate)
                                x = res.push(x)
                            if len(x):
                                yield AudioChunk(x, rate)
                except httpx.HTTPError as exc:
                    raise service_error("speech request", self.url, exc) from exc
                if res is not None:
                    tail = res.flush()
                    if len(tail):
                        yield AudioChunk(tail, rate)
