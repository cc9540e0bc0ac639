"""Read a video and sample it for expression analysis.

:func:`sample_video` decodes the file once (PyAV) and yields :class:`TimedFrame` s: ``full``
ones every ``1 / sample_fps`` seconds, and eye-only ones every ``1 / eye_fps`` seconds in
between (blinks last 100-400 ms: 2 samples a second would miss most; at 10 a second a 200 ms
blink was sometimes seen only half-closed, at 15 each was closed in a sample). Only the sampled
frames are converted to RGB (shrunk so their longer side is at most ``max_side``).

A file that cannot be opened, has no video, fails to decode, or ends well before the duration
its header declares (by more than 3% or 0.5 s: a truncated upload) raises :class:`InputError`
naming the problem: the analysis fails with that message recorded rather than reporting on half
an answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from digihuman.errors import InputError
from digihuman.media._files import existing_file

from .base import TimedFrame

log = logging.getLogger(__name__)

_HINT = "upload the answer again as an mp4, mov, mkv, webm or avi video"


@dataclass
class SampleStats:
    """Filled in while :func:`sample_video` runs (read it after the iterator is exhausted)."""

    decoded: int = 0  # frames decoded
    duration_s: float = 0.0  # time covered by the decoded frames
    declared_s: float | None = None  # duration in the container's header
    stopped_at_limit: bool = False
    size: tuple[int, int] = (0, 0)  # sampled frame (width, height)
    notes: list[str] = field(default_factory=list)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.split(": '")[0].rstrip(".")


def sample_video(
    path: str | os.PathLike[str],
    *,
    sample_fps: float = 2.0,
    eye_fps: float = 15.0,
    max_seconds: float = 3600.0,
    max_side: int = 1280,
    min_complete: float = 0.97,
    stats: SampleStats | None = None,
) -> Iterator[TimedFrame]:
    import av

    st = stats if stats is not None else SampleStats()
    p = existing_file(path, "video")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read the video {p.name} ({_reason(exc)}): the file is corrupt or not a "
            f"video; {_HINT}"
        ) from exc
    with container:
        if not container.streams.video:
            raise InputError(f"{p.name} has no video track; {_HINT}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.duration is not None and stream.time_base is not None:
            st.declared_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            st.declared_s = container.duration / 1_000_000
        full_step = 1.0 / max(sample_fps, 1e-3)
        eye_step = 1.0 / eye_fps if eye_fps > sample_fps else None
        next_full = 0.0
        next_eye = 0.0
        t0: float | None = None
        last_t = 0.0
        frame_dt = 1.0 / float(stream.average_rate or 25)
        try:
            for frame in container.decode(stream):
                t_abs = frame.time if frame.time is not None else st.decoded * frame_dt
                if t0 is None:
                    t0 = float(t_abs)
                t = float(t_abs) - t0
                st.decoded += 1
                last_t = max(last_t, t)
                if t >= max_seconds:
                    st.stopped_at_limit = True
                    log.warning("%s: analysis stops at the %g s limit", p.name, max_seconds)
                    break
                eps = frame_dt * 0.49  # the frame nearest each sampling time
                full = t + eps >= next_full
                eye = not full and eye_step is not None and t + eps >= next_eye
                if not (full or eye):
                    continue
                if full:
                    while next_full <= t + eps:
                        next_full += full_step
                if eye_step is not None:
                    while next_eye <= t + eps:
                        next_eye += eye_step
                w, h = frame.width, frame.height
                scale = min(1.0, max_side / max(w, h, 1))
                if scale < 1.0:
                    w, h = max(2, round(w * scale)) // 2 * 2, max(2, round(h * scale)) // 2 * 2
                    img: Any = frame.to_ndarray(
                        format="rgb24", width=w, height=h, interpolation="FAST_BILINEAR"
                    )
                else:
                    img = frame.to_ndarray(format="rgb24")
                rot = int(getattr(frame, "rotation", 0) or 0) % 360
                if rot:
                    import numpy as np

                    img = np.ascontiguousarray(np.rot90(img, k=rot // 90))
                st.size = (img.shape[1], img.shape[0])
                yield TimedFrame(t=round(t, 3), image=img, full=full)
        except av.error.FFmpegError as exc:
            raise InputError(
                f"the video {p.name} is corrupt or truncated: decoding failed after "
                f"{last_t:.1f} s ({_reason(exc)}); {_HINT}"
            ) from exc
        if st.decoded == 0:
            raise InputError(f"the video {p.name} has no decodable frames; {_HINT}")
        st.duration_s = last_t + frame_dt
        if (
            not st.stopped_at_limit
            and st.declared_s is not None
            and st.declared_s - st.duration_s > max(0.5, (1.0 - min_complete) * st.declared_s)
        ):
            raise InputError(
                f"the video {p.name} is truncated: it declares {st.declared_s:.1f} s but its "
                f"frames end at {st.duration_s:.1f} s; {_HINT}"
            )


def prefetch(frames: Iterator[TimedFrame], depth: int = 8) -> Iterator[TimedFrame]:
    """Run ``frames`` (decoding) on a thread, ``depth`` frames ahead of the consumer, so
    decoding and analysis overlap on two cores. Exceptions come out at the same place in the
    stream; stopping early stops the thread."""
    import queue
    import threading

    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for f in frames:
                if not put(("frame", f)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))

    th = threading.Thread(target=run, name="expression-decode", daemon=True)
    th.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "frame":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        th.join(timeout=10)
