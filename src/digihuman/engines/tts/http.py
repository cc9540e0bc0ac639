"""Shared pieces of the network speech engines: the service error and an incremental WAV parser."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from digihuman.errors import DigihumanError, missing_extra


class SpeechServiceError(DigihumanError):
    """A speech service could not be reached or answered with an error."""

    http_status = 502


def httpx_module() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the speech extra installs it
        raise missing_extra("httpx", "speech") from exc
    return httpx


def api_url(base_url: str, path: str) -> str:
    """``base_url`` may end in ``/v1`` or not: ``http://h:8000`` and ``http://h:8000/v1`` both
    give ``http://h:8000/v1/<path>``."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/{path.lstrip('/')}"


def service_error(what: str, url: str, exc: BaseException) -> SpeechServiceError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return SpeechServiceError(f"{what} at {url} failed: {reason}; check that the server is up")


class WavStreamParser:
    """Feed bytes of a (possibly streamed) 16-bit PCM WAV; get float32 samples as they come.

    Streamed WAVs often carry a placeholder data size (0 or 0xFFFFFFFF); the parser ignores it
    and reads to the end of the stream. ``raw_pcm_rate`` parses headerless 16-bit mono PCM.
    """

    def __init__(self, raw_pcm_rate: int | None = None) -> None:
        self._head = b""
        self._rest = b""
        self.sample_rate: int | None = raw_pcm_rate
        self.channels = 1
        self._in_data = raw_pcm_rate is not None

    def _parse_header(self) -> None:
        h = self._head
        if len(h) < 12:
            return
        if h[:4] != b"RIFF" or h[8:12] != b"WAVE":
            raise SpeechServiceError("the speech service did not answer with WAV audio")
        pos = 12
        while len(h) >= pos + 8:
            cid, size = h[pos : pos + 4], struct.unpack("<I", h[pos + 4 : pos + 8])[0]
            if cid == b"data":
                if self.sample_rate is None:
                    raise SpeechServiceError("the WAV audio has no format chunk")
                self._in_data = True
                self._rest = h[pos + 8 :]
                self._head = b""
                return
            if len(h) < pos + 8 + size:
                return  # wait for the whole chunk
            if cid == b"fmt ":
                fmt, ch, rate, _, _, bits = struct.unpack("<HHIIHH", h[pos + 8 : pos + 24])
                if fmt not in (1, 0xFFFE) or bits != 16:
                    raise SpeechServiceError(
                        f"the speech service sent WAV format {fmt} with {bits}-bit samples; "
                        "only 16-bit PCM is supported"
                    )
                self.sample_rate, self.channels = rate, ch
            pos += 8 + size + (size & 1)

    def feed(self, data: bytes) -> np.ndarray:
        if not self._in_data:
            self._head += data
            self._parse_header()
            if not self._in_data:
                return np.zeros(0, dtype=np.float32)
            data = b""
        buf = self._rest + data
        frame = 2 * self.channels
        usable = len(buf) - len(buf) % frame
        self._rest = buf[usable:]
        x = np.frombuffer(buf[:usable], dtype="<i2").astype(np.float32) / 32768.0
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)
        return x
