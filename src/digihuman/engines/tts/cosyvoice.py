"""A CosyVoice / F5-TTS style HTTP server with voice cloning from a reference voice.

Protocol (CosyVoice's ``runtime/python/fastapi`` server, which F5-TTS wrappers copy):

* ``POST {url}/inference_zero_shot`` multipart form: ``tts_text``, ``prompt_text`` (what the
  reference audio says) and the file ``prompt_wav`` (16 kHz mono WAV of the reference voice);
* ``POST {url}/inference_sft`` form: ``tts_text``, ``spk_id`` (a built-in speaker) when no
  reference voice is configured;

the answer streams raw 16-bit mono PCM at the model's rate (22050 Hz for CosyVoice 1, 24000 Hz
for CosyVoice 2: set ``sample_rate``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from digihuman.errors import InputError, NotFoundError
from digihuman.text import sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities

from .http import SpeechServiceError, WavStreamParser, httpx_module, service_error

log = logging.getLogger(__name__)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV in memory."""
    import wave

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


class CosyVoiceTTS:
    name = "cosyvoice"

    def __init__(
        self,
        *,
        url: str | None = None,
        reference_audio: str | Path | None = None,
        reference_text: str | None = None,
        speaker: str = "中文女",
        sample_rate: int = 22050,
        timeout_s: float = 120.0,
        max_chars: int = 2000,
        max_sentence_chars: int = 200,
    ) -> None:
        if not url:
            raise SpeechServiceError(
                "tts engine 'cosyvoice' needs a server: set tts.cosyvoice_url "
                "(DIGIHUMAN_TTS__COSYVOICE_URL), e.g. http://127.0.0.1:50000"
            )
        self._httpx = httpx_module()
        self.url = url.rstrip("/")
        self._prompt_wav: bytes | None = None
        self.reference_text = reference_text
        if reference_audio is not None:
            if not reference_text:
                raise InputError(
                    "voice cloning needs the reference text too: set tts.reference_text to "
                    "what the reference audio says"
                )
            path = Path(reference_audio)
            if not path.is_file():
                raise NotFoundError(f"reference audio {path} does not exist")
            from digihuman.media.audio import load_audio

            self._prompt_wav = wav_bytes(load_audio(path, 16000), 16000)
        self.speaker = speaker
        self.timeout_s = timeout_s
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars
        self.capabilities = TTSCapabilities(
            sample_rate=sample_rate,
            languages=("zh", "en"),
            voices=(speaker,),
            needs_network=True,
            voice_cloning=True,
        )

    def _request(self, sentence: str, voice: str | None) -> tuple[str, dict[str, str], dict]:
        if self._prompt_wav is not None and voice is None:
            data = {"tts_text": sentence, "prompt_text": self.reference_text or ""}
            files = {"prompt_wav": ("prompt.wav", self._prompt_wav, "audio/wav")}
            return f"{self.url}/inference_zero_shot", data, files
        return (
            f"{self.url}/inference_sft",
            {"tts_text": sentence, "spk_id": voice or self.speaker},
            {},
        )

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        httpx = self._httpx
        rate = self.capabilities.sample_rate
        with httpx.Client(timeout=self.timeout_s) as client:
            for sentence in sentences_for_speech(text, self.max_chars, self.max_sentence_chars):
                url, data, files = self._request(sentence, voice)
                parser = WavStreamParser(raw_pcm_rate=rate)
                try:
                    with client.stream("POST", url, data=data, files=files or None) as resp:
                        if resp.status_code >= 400:
                            body = resp.read().decode("utf-8", "replace")[:200]
                            raise SpeechServiceError(
                                f"voice server {url} answered {resp.status_code}: {body}"
                            )
                        for chunk in resp.iter_bytes():
                            x = parser.feed(chunk)
                            if len(x):
                                yield AudioChunk(x, rate)
                except httpx.HTTPError as exc:
                    raise service_error("voice request", url, exc) from exc
