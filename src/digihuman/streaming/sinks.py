"""Sinks of a live session: a recording file and an RTMP push, both H.264 + AAC via PyAV.

A sink gets ``write(image, audio, index)`` once per tick from the session's pacer and never
blocks it: each sink runs its own thread behind a bounded queue (when the queue is full the
oldest tick is dropped and counted). ``index`` is the session's tick; the encoder derives
timestamps from it (video pts = ticks since the connection opened, audio pts = samples), so
audio and video stay aligned by construction.

* :class:`FileSink` records to ``results/live/<zbjname>.mp4``: fragmented MP4 (readable while
  it is written, and what a killed worker leaves is still playable), written as
  ``.<zbjname>.part.mp4`` and renamed on close (an earlier recording is kept under a
  timestamped name).
* :class:`RtmpSink` pushes FLV over RTMP, a keyframe every second (``keyint = fps``), x264
  ``zerolatency``. A failed connect or write closes the connection and retries with
  exponential backoff (0.5 s doubling to 8 s); ticks meanwhile are dropped, and the reconnected
  stream starts a new timeline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.types import SAMPLE_RATE

log = logging.getLogger(__name__)


class AVEncoder:
    """One open PyAV container with an H.264 and an AAC stream, fed one tick at a time."""

    def __init__(
        self,
        target: str,
        fmt: str,
        *,
        fps: float,
        width: int,
        height: int,
        sample_rate: int = SAMPLE_RATE,
        container_options: dict[str, str] | None = None,
        preset: str = "veryfast",
        video_bitrate: int = 1_500_000,
        audio_bitrate: int = 64_000,
        timeout_s: float = 5.0,
    ) -> None:
        import av

        self.fps = Fraction(fps).limit_denominator(1001)
        self.rate = sample_rate
        opts = dict(container_options or {})
        self.container = av.open(target, mode="w", format=fmt, options=opts, timeout=timeout_s)
        keyint = max(1, round(float(self.fps)))
        vs = self.container.add_stream(
            "libx264",
            rate=self.fps,
            options={
                "preset": preset,
                "tune": "zerolatency",
                "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0",
            },
        )
        vs.width, vs.height = width + width % 2, height + height % 2
        vs.pix_fmt = "yuv420p"
        vs.bit_rate = video_bitrate
        vs.codec_context.time_base = Fraction(1) / self.fps
        vs.codec_context.gop_size = keyint
        self.vs = vs
        self.size = (width, height)
        ast = self.container.add_stream("aac", rate=sample_rate, layout="mono")
        ast.bit_rate = audio_bitrate
        ast.codec_context.time_base = Fraction(1, sample_rate)
        self.ast = ast
        self.frames = 0
        self.samples = 0

    def write(self, image: np.ndarray, audio: np.ndarray) -> None:
        import av

        h, w = image.shape[:2]
        if (w, h) != self.size:
            raise ValueError(f"frame is {w}x{h}, the stream is {self.size[0]}x{self.size[1]}")
        if w % 2 or h % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        vf.pts = self.frames
        vf.time_base = Fraction(1) / self.fps
        for p in self.vs.encode(vf):
            self.container.mux(p)
        self.frames += 1
        a = np.ascontiguousarray(np.asarray(audio, np.float32).reshape(1, -1))
        if a.size:
            af = av.AudioFrame.from_ndarray(a, format="flt", layout="mono")
            af.sample_rate = self.rate
            af.pts = self.samples
            af.time_base = Fraction(1, self.rate)
            self.samples += a.shape[1]
            for p in self.ast.encode(af):
                self.container.mux(p)

    def close(self, flush: bool = True) -> None:
        try:
            if flush:
                for p in self.vs.encode(None):
                    self.container.mux(p)
                for p in self.ast.encode(None):
                    self.container.mux(p)
        finally:
            self.container.close()


class ThreadedSink:
    """A sink running on its own thread behind a bounded queue; subclasses do the I/O."""

    kind = "sink"

    def __init__(self, name: str, *, fps: float, max_queue: int = 50) -> None:
        self.name = name
        self.fps = fps
        self._q: queue.Queue[tuple[np.ndarray, np.ndarray, int] | None] = queue.Queue(max_queue)
        self.frames = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.connected = False
        self.since: float | None = None  # unix time of the current connection
        self.first_write_at: dict[int, float] = {}  # tick -> monotonic time it was encoded
        self.watch: set[int] = set()  # ticks whose encode time to remember (benches)
        self._closing = threading.Event()
        self._t = threading.Thread(target=self._loop, name=f"sink-{name}", daemon=True)
        self._t.start()

    def write(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        item = (image, np.array(audio, np.float32), index)
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

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
        }

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                break
            try:
                self._write_one(*item)
            except Exception as exc:  # counted and shown in health; the subclass recovers
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("sink %s: %s", self.name, self.last_error)
                self._on_error()
        self._finish()

    def _write_one(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        raise NotImplementedError

    def _on_error(self) -> None:
        pass

    def _finish(self) -> None:
        pass

    def close(self) -> None:
        self._closing.set()
        while True:
            try:
                self._q.put(None, timeout=0.5)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._q.get_nowait()
        self._t.join(timeout=10)


class FileSink(ThreadedSink):
    """Record the session to ``path`` (fragmented MP4, renamed into place on close)."""

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], *, fps: float, name: str = "record") -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.part.mp4")
        self._enc: AVEncoder | None = None
        super().__init__(name, fps=fps, max_queue=100)

    def health(self) -> dict[str, Any]:
        h = super().health()
        h["path"] = str(self.path)
        return h

    def _write_one(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        if self._enc is None:
            if self.errors:
                return  # the recording failed once; it is not restarted mid-session
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._enc = AVEncoder(
                str(self.tmp),
                "mp4",
                fps=self.fps,
                width=image.shape[1],
                height=image.shape[0],
                container_options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
            )
            self.connected, self.since = True, time.time()
        self._enc.write(image, audio)
        self.frames += 1
        if index in self.watch:
            self.first_write_at[index] = time.monotonic()

    def _on_error(self) -> None:
        if self._enc is not None:
            try:
                self._enc.close(flush=False)
            except Exception:
                log.debug("sink %s: close after error failed", self.name, exc_info=True)
            self._enc = None
        self.connected = False

    def _finish(self) -> None:
        if self._enc is None:
            return
        try:
            self._enc.close()
        finally:
            self._enc = None
            self.connected = False
        if self.path.exists():  # keep an earlier session's recording
            old = self.path.with_name(f"{self.path.stem}-{int(self.path.stat().st_mtime)}.mp4")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)


class RtmpSink(ThreadedSink):
    """Push the session to an RTMP server (FLV), reconnecting with backoff."""

    kind = "rtmp"

    def __init__(
        self,
        url: str,
        *,
        fps: float,
        name: str = "rtmp",
        backoff_s: tuple[float, float] = (0.5, 8.0),
        timeout_s: float = 3.0,
    ) -> None:
        self.url = url
        self.backoff_lo, self.backoff_hi = backoff_s
        self.timeout_s = timeout_s
        self._enc: AVEncoder | None = None
        self._retry_at = 0.0
        self._backoff = self.backoff_lo
        self.reconnects = 0
        self.connects = 0
        super().__init__(name, fps=fps, max_queue=25)

    def health(self) -> dict[str, Any]:
        h = super().health()
        h.update(url=self.url, connects=self.connects, reconnects=self.reconnects)
        return h

    def _write_one(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        if self._enc is None:
            if time.monotonic() < self._retry_at or self._closing.is_set():
                return  # waiting to reconnect: this tick is dropped
            self._enc = AVEncoder(
                self.url,
                "flv",
                fps=self.fps,
                width=image.shape[1],
                height=image.shape[0],
                preset="ultrafast",
                timeout_s=self.timeout_s,
            )
            self.connects += 1
            self.reconnects += self.connects > 1
            self.connected, self.since = True, time.time()
            log.info("sink %s: connected to %s", self.name, self.url)
        self._enc.write(image, audio)
        self.frames += 1
        self._backoff = self.backoff_lo  # a successful write resets the backoff
        if index in self.watch:
            self.first_write_at[index] = time.monotonic()

    def _on_error(self) -> None:
        if self._enc is not None:
            try:
                self._enc.close(flush=False)
            except Exception:
                log.debug("sink %s: close after error failed", self.name, exc_info=True)
            self._enc = None
        self.connected = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self.backoff_hi, self._backoff * 2)

    def _finish(self) -> None:
        if self._enc is not None:
            try:
                self._enc.close()
            except Exception:
                log.debug("sink %s: close failed", self.name, exc_info=True)
            self._enc = None
        self.connected = False


class HlsSink(ThreadedSink):
    """Low-latency-ish HLS of the session (the viewer page's fallback): 1 s segments (one GOP
    each), a playlist of the last ``list_size``, older segments deleted, under ``folder``
    (``results/live/<zbjname>/hls/index.m3u8``)."""

    kind = "hls"

    def __init__(
        self, folder: str | os.PathLike[str], *, fps: float, name: str = "hls", list_size: int = 6
    ) -> None:
        self.folder = Path(folder)
        self.list_size = list_size
        self._enc: AVEncoder | None = None
        super().__init__(name, fps=fps, max_queue=50)

    @property
    def playlist(self) -> Path:
        return self.folder / "index.m3u8"

    def health(self) -> dict[str, Any]:
        h = super().health()
        h["playlist"] = str(self.playlist)
        return h

    def _write_one(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        if self._enc is None:
            if self.errors:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            for old in self.folder.glob("*.ts"):  # a previous session's segments
                old.unlink(missing_ok=True)
            self._enc = AVEncoder(
                str(self.playlist),
                "hls",
                fps=self.fps,
                width=image.shape[1],
                height=image.shape[0],
                preset="ultrafast",
                container_options={
                    "hls_time": "1",
                    "hls_list_size": str(self.list_size),
                    "hls_flags": "delete_segments+independent_segments+omit_endlist",
                    "hls_segment_filename": str(self.folder / "seg%06d.ts"),
                },
            )
            self.connected, self.since = True, time.time()
        self._enc.write(image, audio)
        self.frames += 1

    def _on_error(self) -> None:
        if self._enc is not None:
            try:
                self._enc.close(flush=False)
            except Exception:
                log.debug("sink %s: close after error failed", self.name, exc_info=True)
            self._enc = None
        self.connected = False

    def _finish(self) -> None:
        if self._enc is not None:
            try:
                self._enc.close()
            finally:
                self._enc = None
                self.connected = False
