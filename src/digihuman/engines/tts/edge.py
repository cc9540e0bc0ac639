"""Microsoft Edge's online voices through the ``edge-tts`` package (its websocket protocol).

edge-tts is asyncio-only: each sentence's stream runs on a private event loop in a worker thread
and its MP3 bytes cross to the caller through a queue; they are decoded with PyAV as they arrive,
so chunks flow while the server is still sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np

from digihuman.errors import missing_extra
from digihuman.text import detect_language, sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities

from .http import SpeechServiceError

log = logging.getLogger(__name__)

EDGE_RATE = 24000  # edge-tts sends audio-24khz-48kbitrate-mono-mp3
DEFAULT_VOICES = {"zh": "zh-CN-XiaoxiaoNeural", "en": "en-US-AriaNeural"}

StreamFactory = Callable[[str, str], AsyncIterator[dict[str, Any]]]
_END = object()


class Mp3Decoder:
    """Incremental MP3 → float32 mono decoding with PyAV."""

    def __init__(self) -> None:
        import av

        self._ctx: Any = av.CodecContext.create("mp3", "r")
        self.sample_rate: int | None = None

    def _frames(self, packets: Any) -> np.ndarray:
        import av

        out = []
        for pkt in packets:
            try:
                frames = self._ctx.decode(pkt)
            except av.error.InvalidDataError:  # an ID3 tag or a damaged frame: skip it
                continue
            for frame in frames:
                self.sample_rate = frame.sample_rate
                a = frame.to_ndarray().astype(np.float32)
                if a.dtype.kind == "i":  # pragma: no cover - mp3 decodes to float planes
                    a = a / 32768.0
                a = a.reshape(len(frame.layout.channels), -1).mean(axis=0)
                out.append(a.astype(np.float32))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def feed(self, data: bytes) -> np.ndarray:
        return self._frames(self._ctx.parse(data))

    def flush(self) -> np.ndarray:
        x = self._frames(self._ctx.parse(None))
        try:
            rest = self._frames([None])
        except Exception:  # pragma: no cover - decoders without a delay raise at EOF
            rest = np.zeros(0, dtype=np.float32)
        return np.concatenate([x, rest])


def _default_factory(rate: str, volume: str, pitch: str) -> StreamFactory:
    try:
        import edge_tts
    except ImportError as exc:
        raise missing_extra("edge-tts", "speech") from exc

    def factory(text: str, voice: str) -> AsyncIterator[dict[str, Any]]:
        comm = edge_tts.Communicate(text, voice, rate=rate, volume=volume, pitch=pitch)
        return comm.stream()  # type: ignore[return-value]  # TTSChunk is a TypedDict

    return factory


class EdgeTTS:
    name = "edge"

    def __init__(
        self,
        *,
        voice: str | None = None,
        rate: str = "+0%",
        volume: str = "+0%",
        pitch: str = "+0Hz",
        stream_factory: StreamFactory | None = None,
        max_chars: int = 2000,
        max_sentence_chars: int = 300,
    ) -> None:
        self._factory = stream_factory or _default_factory(rate, volume, pitch)
        self.voice = voice
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars
        self.capabilities = TTSCapabilities(
            sample_rate=EDGE_RATE,
            languages=("zh", "en"),
            voices=tuple(DEFAULT_VOICES.values()),
            needs_network=True,
        )

    def voice_for(self, text: str, voice: str | None, language: str | None) -> str:
        if voice or self.voice:
            return str(voice or self.voice)
        return DEFAULT_VOICES.get(language or detect_language(text), DEFAULT_VOICES["en"])

    def _mp3_bytes(self, text: str, voice: str) -> Iterator[bytes]:
        """Run the async stream on a worker thread; yield its audio bytes here."""
        q: queue.Queue[object] = queue.Queue(maxsize=64)
        stop = threading.Event()

        async def pump() -> None:
            async for item in self._factory(text, voice):
                if stop.is_set():
                    return
                if item.get("type") == "audio" and item.get("data"):
                    q.put(bytes(item["data"]))

        def run() -> None:
            try:
                asyncio.run(pump())
            except BaseException as exc:  # forwarded to the caller's thread
                q.put(exc)
            finally:
                q.put(_END)

        t = threading.Thread(target=run, name="edge-tts", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise SpeechServiceError(
                        f"edge-tts failed for voice {voice}: {str(item).splitlines()[0] or item!r}"
                    ) from item
                assert isinstance(item, bytes)
                yield item
        finally:
            stop.set()
            for _ in range(50):  # drain (up to 5 s) so the worker is never stuck on a full queue
                if not t.is_alive():
                    break
                with contextlib.suppress(queue.Empty):
                    q.get(timeout=0.1)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        from .stream import StreamResampler

        for sentence in sentences_for_speech(text, self.max_chars, self.max_sentence_chars):
            v = self.voice_for(sentence, voice, language)
            dec = Mp3Decoder()
            res: StreamResampler | None = None

            def out(x: np.ndarray, dec: Mp3Decoder = dec) -> np.ndarray:
                nonlocal res
                if len(x) and dec.sample_rate and dec.sample_rate != EDGE_RATE:
                    res = res or StreamResampler(dec.sample_rate, EDGE_RATE)
                    return res.push(x)
                return x

            for data in self._mp3_bytes(sentence, v):
                x = out(dec.feed(data))
                if len(x):
                    yield AudioChunk(x, EDGE_RATE)
            x = out(dec.flush())
            if res is not None:
                x = np.concatenate([x, res.flush()])
            if len(x):
                yield AudioChunk(x, EDGE_RATE)
