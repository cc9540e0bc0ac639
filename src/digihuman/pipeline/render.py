"""The offline render job: a prepared avatar + speech → an MP4 (and optionally PNG frames).

The loop is visible: audio chunks flow into the engine, frames flow out into the encoder, which
runs on its own thread behind a bounded queue so that generation and encoding overlap. The
result is written beside its final name and renamed into place only when complete.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.engines.base import LipSyncEngine, PreparedAvatar, Progress, no_progress
from digihuman.errors import InputError
from digihuman.storage import atomic_output
from digihuman.timing import frame_count
from digihuman.types import SAMPLE_RATE, AudioChunk, SegmentEnd, VideoFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderResult:
    """What a render produced, with the options that made it."""

    output: Path
    frames_dir: Path | None
    n_frames: int
    fps: float
    audio_seconds: float
    elapsed_s: float
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        """Seconds of video produced per second of wall time."""
        return self.audio_seconds / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def default_output_name(avatar_name: str, audio_name: str) -> str:
    """The seed's naming: ``<input>_<audio>`` (file stems)."""
    return f"{Path(avatar_name).stem}_{Path(audio_name).stem}"


class _FrameSink:
    """Encodes frames and streamed audio on a worker thread, in arrival order; writes PNGs."""

    _STOP = object()

    def __init__(self, writer: Any, frames_dir: Path | None) -> None:
        self.writer = writer
        self.frames_dir = frames_dir
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=32)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import cv2

        try:
            while True:
                item = self.queue.get()
                if item is self._STOP:
                    return
                if isinstance(item, np.ndarray):  # streamed audio, in order with the frames
                    self.writer.add_audio(item)
                    continue
                frame: VideoFrame = item
                self.writer.write(frame.image)
                if self.frames_dir is not None:
                    path = self.frames_dir / f"{frame.index:08d}.png"
                    cv2.imwrite(str(path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        except BaseException as exc:  # surfaced in put()/close()
            self.error = exc
            while True:  # drain so the producer never blocks
                if self.queue.get() is self._STOP:
                    return

    def put(self, item: VideoFrame | np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def close(self) -> None:
        self.queue.put(self._STOP)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _tee_audio(
    stream: Iterable[AudioChunk | SegmentEnd], sink: _FrameSink | None, seen: list[int]
) -> Iterator[AudioChunk | SegmentEnd]:
    """Pass audio on to the engine; in streaming mode also send each chunk to the encoder."""
    for item in stream:
        if isinstance(item, AudioChunk):
            if item.sample_rate != SAMPLE_RATE:
                raise InputError(f"audio chunks must be {SAMPLE_RATE} Hz, got {item.sample_rate}")
            seen[0] += len(item.samples)
            if sink is not None:
                sink.put(np.asarray(item.samples, dtype=np.float32))
        yield item


def render(
    engine: LipSyncEngine,
    prepared: PreparedAvatar,
    audio: np.ndarray | Iterable[AudioChunk | SegmentEnd],
    output: Path,
    *,
    save_frames: bool = False,
    progress: Progress = no_progress,
    crf: int = 20,
) -> RenderResult:
    """Render ``prepared`` speaking ``audio`` into ``output`` (an .mp4).

    ``audio`` is either a whole 16 kHz mono float32 clip (normal mode) or a stream of chunks
    ending with ``SegmentEnd`` (e.g. TTS output as it is produced): then frames are generated
    while audio still arrives and each chunk is muxed as it comes, in one pass.
    """
    from digihuman.media.video import VideoWriter

    fps = engine.capabilities.fps
    t0 = time.perf_counter()
    output = Path(output)
    frames_final = output.with_suffix("") if save_frames else None
    streaming = not isinstance(audio, np.ndarray)
    if isinstance(audio, np.ndarray):
        whole: np.ndarray | None = np.asarray(audio, dtype=np.float32)
        if whole is None or whole.size == 0:
            raise InputError("the audio is empty; give a recording with speech")
        total = frame_count(len(whole), SAMPLE_RATE, fps)
        stream: Iterable[AudioChunk | SegmentEnd] = [AudioChunk(whole), SegmentEnd()]
    else:
        whole, total, stream = None, 0, audio

    frames_tmp: Path | None = None
    if frames_final is not None:
        frames_final.parent.mkdir(parents=True, exist_ok=True)
        frames_tmp = Path(
            tempfile.mkdtemp(prefix=f".{frames_final.name}.", dir=frames_final.parent)
        )
    n = 0
    seen = [0]
    try:
        with atomic_output(output, suffix=".mp4") as tmp_video:
            writer = VideoWriter(tmp_video, fps, audio=whole, stream_audio=streaming, crf=crf)
            sink = _FrameSink(writer, frames_tmp)
            ok = False
            try:
                audio_in = _tee_audio(stream, sink if streaming else None, seen)
                for frame in engine.generate(prepared, audio_in):
                    sink.put(frame)
                    n += 1
                    if total:
                        progress(min(1.0, n / total), f"frame {n}/{total}")
                    elif n % 25 == 0:
                        progress(0.0, f"frame {n}")
                ok = True
            finally:
                sink.close()
                if ok and n > 0:
                    writer.close()
                else:
                    writer.abort()
            if n == 0:
                raise InputError("no video frames were produced: the audio is empty")
        if frames_tmp is not None and frames_final is not None:
            if frames_final.exists():
                shutil.rmtree(frames_final)
            frames_tmp.rename(frames_final)
            frames_tmp = None
    finally:
        if frames_tmp is not None:
            shutil.rmtree(frames_tmp, ignore_errors=True)
    progress(1.0, "done")
    elapsed = time.perf_counter() - t0
    return RenderResult(
        output=output,
        frames_dir=frames_final,
        n_frames=n,
        fps=fps,
        audio_seconds=seen[0] / SAMPLE_RATE,
        elapsed_s=elapsed,
        options={"engine": engine.name, "save_frames": save_frames, "crf": crf},
    )
