"""WebRTC sink of a live session (aiortc): WHIP publish and built-in viewers.

One sink per session owns an asyncio loop on its own thread. Each tick the pacer's
``write(image, audio, index)`` is handed (thread-safe, never blocking) to every *feed*: one per
peer connection, a small queue read by that peer's video and audio tracks. Tracks take their
timestamps from the tick (video: 90 kHz clock, audio: samples), so the WebRTC stream keeps the
session's 25 fps and its A/V alignment.

* **WHIP** (``whip_url``): the sink POSTs an SDP offer (``application/sdp``) to the endpoint,
  sets the answer, and sends; when the connection fails or the POST is refused it retries with
  backoff (0.5 s doubling to 8 s) and DELETEs the resource it was given on close.
* **Viewers**: :meth:`WebRtcSink.answer` takes a browser's offer and returns the answer (the
  API relays it from ``POST /v1/rooms/{zbjname}/webrtc``); each viewer has its own feed, so a
  viewer that leaves or stalls affects nobody else (its queue drops its oldest ticks).
``iceServers=[]``: host candidates only, which works on a LAN or loopback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fractions
import logging
import threading
import time
from typing import Any

import numpy as np

from digihuman.errors import missing_extra
from digihuman.types import SAMPLE_RATE

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000


class _Feed:
    """The ticks for one peer: video frames and 20 ms audio frames, oldest dropped when full."""

    def __init__(self) -> None:
        self.video: asyncio.Queue[tuple[np.ndarray, int]] = asyncio.Queue(maxsize=8)
        self.audio: asyncio.Queue[tuple[np.ndarray, int]] = asyncio.Queue(maxsize=20)
        self.dropped = 0

    def put(self, image: np.ndarray, audio: np.ndarray, index: int, samples_at: int) -> None:
        self._put(self.video, (image, index))
        half = len(audio) // 2
        self._put(self.audio, (audio[:half], samples_at))
        self._put(self.audio, (audio[half:], samples_at + half))

    def _put(self, q: asyncio.Queue[Any], item: Any) -> None:
        if q.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()
                self.dropped += 1
        q.put_nowait(item)


def _tracks(feed: _Feed, fps: float) -> tuple[Any, Any]:
    import av

    try:
        from aiortc import MediaStreamTrack
    except ImportError as exc:  # pragma: no cover - the service extra has it
        raise missing_extra("aiortc", "service") from exc

    step = round(VIDEO_CLOCK / fps)

    class Video(MediaStreamTrack):
        kind = "video"

        async def recv(self) -> Any:
            image, index = await feed.video.get()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index * step
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            return frame

    class Audio(MediaStreamTrack):
        kind = "audio"

        async def recv(self) -> Any:
            samples, at = await feed.audio.get()
            pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = at
            frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
            return frame

    return Video(), Audio()


class WebRtcSink:
    """WHIP publisher (optional) and viewer peers for one live session."""

    kind = "webrtc"

    def __init__(
        self,
        *,
        fps: float,
        whip_url: str | None = None,
        name: str = "webrtc",
        max_viewers: int = 16,
        backoff_s: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        self.name, self.fps, self.whip_url = name, fps, whip_url
        self.max_viewers = max_viewers
        self.backoff_lo, self.backoff_hi = backoff_s
        self.feeds: dict[int, _Feed] = {}
        self.viewers: dict[int, Any] = {}
        self.frames = 0
        self.samples = 0
        self.whip_connected = False
        self.whip_connects = 0
        self.whip_errors = 0
        self.last_error: str | None = None
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._t = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)
        self._t.start()
        self._ready.wait(5)
        self._whip_task: concurrent.futures.Future[None] | None = None
        if whip_url:
            self._whip_task = asyncio.run_coroutine_threadsafe(self._whip_loop(), self._loop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    # ---- the pacer's side ------------------------------------------------------------------
    def write(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        at = self.samples
        self.frames += 1
        self.samples += len(audio)
        if self.feeds:
            a = np.array(audio, np.float32)
            self._loop.call_soon_threadsafe(self._fan_out, image, a, index, at)

    def _fan_out(self, image: np.ndarray, audio: np.ndarray, index: int, at: int) -> None:
        for feed in list(self.feeds.values()):
            feed.put(image, audio, index, at)

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "ok": self.whip_connected if self.whip_url else True,
            "frames": self.frames,
            "viewers": len(self.viewers),
            "whip_url": self.whip_url,
            "whip_connected": self.whip_connected,
            "whip_connects": self.whip_connects,
            "errors": self.whip_errors,
            "last_error": self.last_error,
            "dropped": sum(f.dropped for f in self.feeds.values()),
        }

    # ---- peers -----------------------------------------------------------------------------
    async def _peer(self) -> tuple[Any, _Feed]:
        from aiortc import RTCConfiguration, RTCPeerConnection

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        feed = _Feed()
        video, audio = _tracks(feed, self.fps)
        pc.addTrack(video)
        pc.addTrack(audio)
        return pc, feed

    async def _answer(self, sdp: str) -> str:
        from aiortc import RTCSessionDescription

        if len(self.viewers) >= self.max_viewers:
            from digihuman.errors import QueueFull

            raise QueueFull(
                f"this room already has {len(self.viewers)} viewers (the limit)",
                kind="viewers",
                limit=self.max_viewers,
                retry_after_s=10.0,
            )
        pc, feed = await self._peer()
        key = id(pc)

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.feeds.pop(key, None)
                self.viewers.pop(key, None)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        self.feeds[key] = feed
        self.viewers[key] = pc
        return str(pc.localDescription.sdp)

    def answer(self, sdp: str, timeout_s: float = 10.0) -> str:
        """A viewer's SDP offer → this session's SDP answer (thread-safe, blocking)."""
        fut = asyncio.run_coroutine_threadsafe(self._answer(sdp), self._loop)
        return fut.result(timeout_s)

    async def _whip_loop(self) -> None:
        import httpx
        from aiortc import RTCSessionDescription

        assert self.whip_url is not None
        backoff = self.backoff_lo
        while not self._closing:
            pc = None
            key = 0
            location = None
            try:
                pc, feed = await self._peer()
                key = id(pc)
                await pc.setLocalDescription(await pc.createOffer())
                async with httpx.AsyncClient(timeout=10) as client:
                    r = await client.post(
                        self.whip_url,
                        content=pc.localDescription.sdp,
                        headers={"Content-Type": "application/sdp"},
                    )
                    r.raise_for_status()
                    location = r.headers.get("location")
                await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
                self.feeds[key] = feed
                self.whip_connects += 1
                deadline = time.monotonic() + 10
                while pc.connectionState != "connected" and time.monotonic() < deadline:
                    if pc.connectionState in ("failed", "closed"):
                        break
                    await asyncio.sleep(0.05)
                if pc.connectionState != "connected":
                    raise ConnectionError(f"WHIP peer connection {pc.connectionState}")
                self.whip_connected = True
                backoff = self.backoff_lo
                while pc.connectionState == "connected" and not self._closing:
                    await asyncio.sleep(0.1)
                if not self._closing:
                    raise ConnectionError(f"WHIP peer connection {pc.connectionState}")
            except Exception as exc:  # counted, shown in health, retried
                self.whip_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("sink %s: WHIP %s: %s", self.name, self.whip_url, self.last_error)
            finally:
                self.whip_connected = False
                self.feeds.pop(key, None)
                if pc is not None:
                    await pc.close()
                if location and self._closing:
                    with contextlib.suppress(Exception):
                        url = httpx.URL(self.whip_url).join(location)
                        async with httpx.AsyncClient(timeout=3) as client:
                            await client.delete(url)
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(self.backoff_hi, backoff * 2)

    def close(self) -> None:
        self._closing = True

        async def shutdown() -> None:
            for pc in list(self.viewers.values()):
                await pc.close()
            self.viewers.clear()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        if self._whip_task is not None:
            with contextlib.suppress(Exception):
                self._whip_task.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._t.join(timeout=5)
