"""Sinks of a live session: one H.264 + AAC encoder per room, muxed into every container.

The pacer hands each tick to every :class:`~digihuman.pipeline.live.FrameSink` with
``write(image, audio, index)``, which never blocks it. :class:`LiveEncoder` is that sink for
the encoded outputs: on its own thread, behind a bounded queue (full: the oldest tick is
dropped and counted), it converts each frame to yuv420p once (a repeated or idle frame that is
the same array as the last one is not converted again) and encodes it ONCE — PyAV libx264
(``zerolatency``, one preset for live, ``keyint = min-keyint = fps``, no scene-cut: a keyframe
every second) + AAC; timestamps are frames and samples encoded (one frame and one tick's
samples per tick), so audio and video stay aligned by construction. Its packets go to every
container output, each running its own muxer on its own thread behind its own bounded packet
queue (full: the oldest packet is dropped and counted, and that output skips to the next
keyframe), so a slow or reconnecting server never slows the encoder, the pacer or the other
outputs:

* :class:`FileSink` records to ``results/live/<zbjname>.mp4``: fragmented MP4 (readable while
  it is written, and what a killed worker leaves is still playable), written as
  ``.<zbjname>.part.mp4`` and renamed on close (an earlier recording is kept under a
  timestamped name).
* :class:`HlsSink` writes 1 s MPEG-TS segments (one GOP each) and a playlist of the last six.
* :class:`RtmpSink` pushes FLV over RTMP. A failed connect or write closes the connection and
  retries with exponential backoff (0.5 s doubling to 8 s); packets meanwhile are dropped, and
  the reconnected stream starts at the next keyframe on a fresh timeline (its first keyframe's
  tick is time 0).

Every output opens at a keyframe, with that keyframe as its time 0 for video and audio alike
(the audio packet that covers it is kept, as the AAC priming packet is at the start).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.types import SAMPLE_RATE

log = logging.getLogger(__name__)

AAC_FRAME = 1024  # samples per AAC packet (and the encoder's priming delay)


@dataclass(frozen=True)
class EncodedPacket:
    """One encoded packet, shared read-only by every output (each muxes its own copy)."""

    video: bool
    data: bytes
    pts: int  # video: ticks; audio: samples
    dts: int
    key: bool
    duration: int
    tick: int  # the session tick it was encoded at (benches' latency; -1: the final flush)
    at_sample: int = 0  # video: the audio sample position of that tick


def _put_dropping(q: queue.Queue[Any], item: Any, size: Any = None) -> int:
    """Put without blocking; when full drop the oldest first. Returns the number dropped
    (entries, or the sum of ``size(entry)``)."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                old = q.get_nowait()
                dropped += 1 if size is None or old is None else size(old)
            except queue.Empty:
                pass


class ContainerSink:
    """One container fed encoded packets by a :class:`LiveEncoder`, muxed on its own thread.

    Subclasses say how to open the container (:meth:`_open`) and what to do after an error
    (``retry``: reconnect with backoff, or give up for the session)."""

    kind = "container"
    retry = False

    def __init__(
        self,
        name: str,
        *,
        max_queue: int = 100,  # ticks (each a list of packets)
        backoff_s: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        self.name = name
        self._q: queue.Queue[list[EncodedPacket] | None] = queue.Queue(max_queue)
        self.frames = 0  # video packets muxed
        self.dropped = 0  # packets dropped (queue full, or waiting for a keyframe after that)
        self.errors = 0
        self.last_error: str | None = None
        self.connected = False
        self.since: float | None = None  # unix time of the current connection
        self.connects = 0
        self.reconnects = 0
        self.first_write_at: dict[int, float] = {}  # tick -> monotonic time it was muxed
        self.watch: set[int] = set()  # ticks whose mux time to remember (benches)
        self.backoff_lo, self.backoff_hi = backoff_s
        self._backoff = self.backoff_lo
        self._retry_at = 0.0
        self._templates: tuple[Any, Any] | None = None
        self._c: Any = None
        self._vs: Any = None
        self._as: Any = None
        self._v0 = 0  # this connection's time 0: the pts of its first keyframe
        self._a0 = 0  # ... in audio samples
        self._spt = Fraction(SAMPLE_RATE, 25)
        self._tb_v = Fraction(1, 25)
        self._tb_a = Fraction(1, SAMPLE_RATE)
        self._need_key = True
        self._early_audio: deque[EncodedPacket] = deque(maxlen=2)
        self._gave_up = False
        self._t = threading.Thread(target=self._loop, name=f"sink-{name}", daemon=True)
        self._t.start()

    # ---- the encoder's side ----------------------------------------------------------------
    def attach(self, video: Any, audio: Any, fps: Fraction, sample_rate: int) -> None:
        """The encoder's streams (templates for this container's streams)."""
        self._tb_v, self._tb_a = Fraction(1) / fps, Fraction(1, sample_rate)
        self._spt = Fraction(sample_rate) / fps
        self._templates = (video, audio)

    def put(self, packets: list[EncodedPacket]) -> None:
        """One tick's packets (one queue entry: a dropped entry counts its packets)."""
        self.dropped += _put_dropping(self._q, packets, len)

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "ok": self.connected,
            "frames": self.frames,
            "dropped": self.dropped,
            "errors": self.errors,
            "last_error": self.last_error,
            "since": self.since,
            "connects": self.connects,
            "reconnects": self.reconnects,
        }

    # ---- the muxer thread ------------------------------------------------------------------
    def _loop(self) -> None:
        lost = 0
        while True:
            batch = self._q.get()
            if batch is None:
                break
            if self.dropped != lost:  # the queue overflowed: resume at a keyframe
                lost, self._need_key = self.dropped, True
            try:
                for pkt in batch:
                    self._mux(pkt)
            except Exception as exc:  # counted and shown in health; retried or given up
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("sink %s: %s", self.name, self.last_error)
                self._close_container(flush=False)
                if self.retry:
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self.backoff_hi, self._backoff * 2)
                else:
                    self._gave_up = True
        try:
            self._close_container(flush=True)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("sink %s: closing failed: %s", self.name, self.last_error)
        self._finish()

    def _mux(self, pkt: EncodedPacket) -> None:
        if self._c is None:
            if self._gave_up or self._templates is None:
                return
            if not pkt.video:
                self._early_audio.append(pkt)
                return
            if not pkt.key or time.monotonic() < self._retry_at:
                self.dropped += 1
                return
            c = self._open()
            try:
                self._vs = c.add_stream_from_template(self._templates[0])
                self._as = c.add_stream_from_template(self._templates[1])
                c.start_encoding()  # connects / creates the file, writes the header
            except BaseException:
                with contextlib.suppress(Exception):
                    c.close()
                raise
            self._c = c
            self._v0 = pkt.pts
            self._a0 = pkt.at_sample
            self.connects += 1
            self.reconnects += self.connects > 1
            self.connected, self.since = True, time.time()
            self._need_key = False
            log.info("sink %s: opened at tick %d", self.name, pkt.pts)
            early = list(self._early_audio)
            self._early_audio.clear()
            self._write(pkt)
            for a in early:
                self._write(a)
            return
        if self._need_key and pkt.video:
            if not pkt.key:
                self.dropped += 1
                return
            self._need_key = False
        self._write(pkt)

    def _write(self, pkt: EncodedPacket) -> None:
        import av

        if pkt.video:
            pts, dts, tb, stream = pkt.pts - self._v0, pkt.dts - self._v0, self._tb_v, self._vs
        else:
            pts, dts, tb, stream = pkt.pts - self._a0, pkt.dts - self._a0, self._tb_a, self._as
            if pts < -AAC_FRAME:
                return  # before this connection's time 0 (its priming packet is kept)
        p = av.Packet(pkt.data)
        p.pts, p.dts, p.time_base, p.duration = pts, dts, tb, pkt.duration
        p.is_keyframe = pkt.key
        p.stream = stream
        self._c.mux(p)
        if pkt.video:
            self.frames += 1
            self._backoff = self.backoff_lo  # a successful write resets the backoff
            if pkt.tick in self.watch:
                self.first_write_at[pkt.tick] = time.monotonic()

    def _close_container(self, flush: bool) -> None:
        c, self._c = self._c, None
        self.connected = False
        self._need_key = True
        if c is None:
            return
        if flush:
            c.close()
        else:
            with contextlib.suppress(Exception):
                c.close()

    def _open(self) -> Any:
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    def close(self) -> None:
        """Called by the encoder once its last packets are queued."""
        while True:
            try:
                self._q.put(None, timeout=0.5)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._q.get_nowait()
        self._t.join(timeout=10)


class FileSink(ContainerSink):
    """Record the session to ``path`` (fragmented MP4, renamed into place on close)."""

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], *, name: str = "record") -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.part.mp4")
        super().__init__(name, max_queue=100)

    def health(self) -> dict[str, Any]:
        h = super().health()
        h["path"] = str(self.path)
        return h

    def _open(self) -> Any:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        opts = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
        return av.open(str(self.tmp), mode="w", format="mp4", options=opts)

    def _finish(self) -> None:
        if self.connects == 0 or not self.tmp.exists():
            return
        if self.path.exists():  # keep an earlier session's recording
            old = self.path.with_name(f"{self.path.stem}-{int(self.path.stat().st_mtime)}.mp4")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)


class HlsSink(ContainerSink):
    """HLS of the session (the viewer page's fallback): 1 s segments (one GOP each), a playlist
    of the last ``list_size``, older segments deleted, under ``folder``
    (``results/live/<zbjname>/hls/index.m3u8``)."""

    kind = "hls"

    def __init__(
        self, folder: str | os.PathLike[str], *, name: str = "hls", list_size: int = 6
    ) -> None:
        self.folder = Path(folder)
        self.list_size = list_size
        super().__init__(name, max_queue=50)

    @property
    def playlist(self) -> Path:
        return self.folder / "index.m3u8"

    def health(self) -> dict[str, Any]:
        h = super().health()
        h["playlist"] = str(self.playlist)
        return h

    def _open(self) -> Any:
        import av

        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.ts"):  # a previous session's segments
            old.unlink(missing_ok=True)
        opts = {
            "hls_time": "1",
            "hls_list_size": str(self.list_size),
            "hls_flags": "delete_segments+independent_segments+omit_endlist",
            "hls_segment_filename": str(self.folder / "seg%06d.ts"),
        }
        return av.open(str(self.playlist), mode="w", format="hls", options=opts)


class RtmpSink(ContainerSink):
    """Push the session to an RTMP server (FLV), reconnecting with backoff."""

    kind = "rtmp"
    retry = True

    def __init__(
        self,
        url: str,
        *,
        name: str = "rtmp",
        backoff_s: tuple[float, float] = (0.5, 8.0),
        timeout_s: float = 3.0,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        super().__init__(name, max_queue=25, backoff_s=backoff_s)

    def health(self) -> dict[str, Any]:
        h = super().health()
        h["url"] = self.url
        return h

    def _open(self) -> Any:
        import av

        return av.open(self.url, mode="w", format="flv", timeout=self.timeout_s)


class LiveEncoder:
    """The session's one H.264 + AAC encoder (a FrameSink), feeding ``outputs``."""

    kind = "encoder"

    def __init__(
        self,
        outputs: list[ContainerSink],
        *,
        fps: float,
        name: str = "encoder",
        sample_rate: int = SAMPLE_RATE,
        preset: str = "ultrafast",
        video_bitrate: int = 1_500_000,
        audio_bitrate: int = 64_000,
        max_queue: int = 50,
    ) -> None:
        self.name = name
        self.outputs = list(outputs)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.rate = sample_rate
        self._tb_v, self._tb_a = Fraction(1) / self.fps, Fraction(1, sample_rate)
        self.preset, self.video_bitrate, self.audio_bitrate = preset, video_bitrate, audio_bitrate
        self._q: queue.Queue[tuple[np.ndarray, np.ndarray, int] | None] = queue.Queue(max_queue)
        self.frames = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self._tpl: Any = None  # a container writing to /dev/null that holds the codec contexts
        self._vs: Any = None
        self._as: Any = None
        self._size: tuple[int, int] | None = None
        self._samples = 0
        self._last: tuple[np.ndarray, Any] | None = None  # (image, its yuv420p frame)
        self._t = threading.Thread(target=self._loop, name=f"sink-{name}", daemon=True)
        self._t.start()

    def write(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        self.dropped += _put_dropping(self._q, (image, np.asarray(audio, np.float32), index))

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "ok": self._vs is not None and not self.errors,
            "frames": self.frames,
            "dropped": self.dropped,
            "errors": self.errors,
            "last_error": self.last_error,
            "preset": self.preset,
            "outputs": [o.name for o in self.outputs],
        }

    # ---- the encoder thread ----------------------------------------------------------------
    def _open(self, width: int, height: int) -> None:
        import av

        keyint = max(1, round(float(self.fps)))
        # mp4 sets the global-header flag (SPS/PPS and the AAC config as extradata, which MP4
        # and FLV need in their headers; the MPEG-TS muxer puts them before each keyframe)
        tpl = av.open(os.devnull, mode="w", format="mp4")
        vs = tpl.add_stream(
            "libx264",
            rate=self.fps,
            options={
                "preset": self.preset,
                "tune": "zerolatency",
                "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0",
            },
        )
        vs.width, vs.height = width + width % 2, height + height % 2
        vs.pix_fmt = "yuv420p"
        vs.bit_rate = self.video_bitrate
        vs.codec_context.time_base = Fraction(1) / self.fps
        vs.codec_context.gop_size = keyint
        ast = tpl.add_stream("aac", rate=self.rate, layout="mono")
        ast.bit_rate = self.audio_bitrate
        ast.codec_context.time_base = Fraction(1, self.rate)
        tpl.start_encoding()  # opens both encoders; the templates now carry their extradata
        self._tpl, self._vs, self._as, self._size = tpl, vs, ast, (width, height)
        for o in self.outputs:
            o.attach(vs, ast, self.fps, self.rate)

    def _yuv(self, image: np.ndarray) -> Any:
        import av

        if self._last is not None and self._last[0] is image:
            return self._last[1]  # the same picture again (idle, or a repeated frame)
        h, w = image.shape[:2]
        if w % 2 or h % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        import cv2

        # OpenCV's BT.601 limited-range I420 (what swscale makes of rgb24 by default), about
        # 20x faster than swscale here and without the GIL
        i420: np.ndarray[Any, np.dtype[np.uint8]] = np.asarray(
            cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420), np.uint8
        )
        vf = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        self._last = (image, vf)
        return vf

    def _collect(
        self, out: list[EncodedPacket], packets: Any, video: bool, tick: int, at_sample: int = 0
    ) -> None:
        for p in packets:
            if p.pts is None:
                continue
            ep = EncodedPacket(
                video,
                bytes(p),
                int(p.pts),
                int(p.dts if p.dts is not None else p.pts),
                bool(p.is_keyframe),
                int(p.duration or (1 if video else AAC_FRAME)),
                tick,
                at_sample,
            )
            out.append(ep)

    def _fan_out(self, packets: list[EncodedPacket]) -> None:
        if packets:
            for o in self.outputs:  # the same list: outputs only read it
                o.put(packets)

    def _encode(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        import av

        h, w = image.shape[:2]
        if self._vs is None:
            self._open(w, h)
        elif (w, h) != self._size:
            raise ValueError(f"frame is {w}x{h}, the stream is {self._size}")
        vf = self._yuv(image)
        vf.pts = self.frames  # frames encoded: a dropped tick leaves no hole in either stream
        vf.time_base = self._tb_v
        out: list[EncodedPacket] = []
        self._collect(out, self._vs.encode(vf), True, index, self._samples)
        self.frames += 1
        a = np.ascontiguousarray(audio.reshape(1, -1))
        if a.size:
            af = av.AudioFrame.from_ndarray(a, format="flt", layout="mono")
            af.sample_rate = self.rate
            af.pts = self._samples  # samples encoded (audio stays continuous)
            af.time_base = self._tb_a
            self._samples += a.shape[1]
            self._collect(out, self._as.encode(af), False, index)
        self._fan_out(out)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                break
            try:
                self._encode(*item)
            except Exception as exc:  # counted and shown in health
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("sink %s: %s", self.name, self.last_error)
        if self._vs is not None:
            with contextlib.suppress(Exception):
                out: list[EncodedPacket] = []
                self._collect(out, self._vs.encode(None), True, -1)
                self._collect(out, self._as.encode(None), False, -1)
                self._fan_out(out)
            with contextlib.suppress(Exception):
                self._tpl.close()
        for o in self.outputs:
            o.close()

    def close(self) -> None:
        while True:
            try:
                self._q.put(None, timeout=0.5)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._q.get_nowait()
        self._t.join(timeout=15)
