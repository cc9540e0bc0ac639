"""The live session over WebRTC (aiortc): WHIP publish to a receiver this test runs, and viewer
peers answered by the sink (what the API relays for the built-in viewer page)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest

aiortc = pytest.importorskip("aiortc")

from digihuman.engines.lipsync.fake import FakeLipSync  # noqa: E402
from digihuman.pipeline.live import LiveSession  # noqa: E402
from digihuman.streaming.webrtc import WebRtcSink  # noqa: E402

SR = 16000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Received:
    def __init__(self) -> None:
        self.video: list[tuple[float, float]] = []  # (arrival, mean level)
        self.audio: list[tuple[float, float]] = []  # (arrival, rms)


async def pump(track: Any, got: Received) -> None:
    from aiortc.mediastreams import MediaStreamError

    while True:
        try:
            f = await track.recv()
        except MediaStreamError:
            return
        if track.kind == "video":
            got.video.append((time.monotonic(), float(f.to_ndarray(format="rgb24").mean())))
        else:
            a = f.to_ndarray().astype(np.float32) / 32768
            got.audio.append((time.monotonic(), float(np.sqrt(np.mean(a * a)))))


class WhipReceiver:
    """A WHIP endpoint (POST offer → 201 answer + Location; DELETE) on a loopback port."""

    def __init__(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.got = Received()
        self.pcs: list[Any] = []
        self.deleted = 0

        async def post(request: Request) -> Response:
            from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

            assert request.headers["content-type"] == "application/sdp"
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self.pcs.append(pc)
            pc.on("track", lambda track: asyncio.ensure_future(pump(track, self.got)))
            offer = (await request.body()).decode()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            return Response(
                pc.localDescription.sdp,
                status_code=201,
                media_type="application/sdp",
                headers={"Location": f"/whip/{len(self.pcs)}"},
            )

        async def delete(request: Request) -> Response:
            self.deleted += 1
            return Response(status_code=200)

        app = Starlette(
            routes=[
                Route("/whip", post, methods=["POST"]),
                Route("/whip/{n}", delete, methods=["DELETE"]),
            ]
        )
        self.port = free_port()
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self._t = threading.Thread(target=self.server.run, daemon=True)
        self._t.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self._t.join(timeout=10)


class Viewer:
    """A receive-only peer, as the viewer page makes it, on its own event loop thread."""

    def __init__(self, sink: WebRtcSink) -> None:
        self.got = Received()
        self.loop = asyncio.new_event_loop()
        self._t = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._t.start()
        self.pc = asyncio.run_coroutine_threadsafe(self._connect(sink), self.loop).result(20)

    async def _connect(self, sink: WebRtcSink) -> Any:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        pc.on("track", lambda track: asyncio.ensure_future(pump(track, self.got)))
        await pc.setLocalDescription(await pc.createOffer())
        answer = await asyncio.to_thread(sink.answer, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return pc

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.pc.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._t.join(timeout=5)


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cond()


def test_whip_publish_and_viewers_get_frames_and_audio() -> None:
    fake = FakeLipSync()
    prepared = fake.prepare(np.full((1, 96, 128, 3), 100, np.uint8), 25.0)
    whip = WhipReceiver()
    sink = WebRtcSink(fps=25.0, whip_url=f"http://127.0.0.1:{whip.port}/whip")
    session = LiveSession(fake, prepared, sinks=[sink], name="rtc")
    session.start()
    try:
        wait_for(lambda: sink.whip_connected and len(whip.got.video) > 25)
        t = np.arange(2 * SR) / SR
        session.say((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
        wait_for(lambda: any(rms > 0.05 for _, rms in whip.got.audio))  # the speech arrived
        assert all(abs(level - 100) < 12 for _, level in whip.got.video[:10])  # the picture
        n0 = len(whip.got.video)
        t0 = time.monotonic()
        wait_for(lambda: len(whip.got.video) >= n0 + 50)
        rate = 50 / (time.monotonic() - t0)
        assert 15 < rate < 35, rate  # about 25 frames/s arrive

        # two viewers; one leaves, the other keeps receiving
        a, b = Viewer(sink), Viewer(sink)
        wait_for(lambda: len(a.got.video) > 10 and len(b.got.video) > 10 and a.got.audio)
        assert sink.health()["viewers"] == 2
        a.close()
        n = len(b.got.video)
        wait_for(lambda: len(b.got.video) > n + 25)
        wait_for(lambda: sink.health()["viewers"] == 1)
        b.close()
        assert sink.whip_connected and sink.whip_errors == 0
    finally:
        session.stop()
        whip.stop()
    assert whip.deleted == 1  # the WHIP resource was deleted on close
