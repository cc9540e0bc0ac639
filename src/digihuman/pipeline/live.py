"""The live session of one room: queued speech and clips → one paced 25 fps A/V stream.

One thread (the *pacer*) owns the clock. Tick ``n`` is due at ``t0 + n / fps`` on
``time.monotonic``; each tick produces exactly one video frame and ``sample_rate / fps`` audio
samples and hands both to every sink. What the tick shows:

* **idle** (nothing queued): the avatar's rest frame for source frame ``pingpong(c)`` (the lite
  engine's closed-lips rest pose, ``engine.render(p, k, 0, 0, blink)``, with its blink schedule;
  other engines: the source frame), audio silence. ``c`` is the *cycle* counter: it advances
  by one every tick, idle or not, so a video avatar loops forward-backward without a seam.
* **speaking**: an utterance's frames from the engine's realtime ``generate`` (run on a
  producer thread, fed the utterance in one-frame chunks with ``SegmentEnd`` after each
  silence-cut segment, ``start_frame=c``), and the utterance's audio. Frame ``j`` of the
  utterance belongs to tick ``n0 + j``: a frame that is not ready at its tick is replaced by the
  last frame shown (the stream never stalls, the audio never stops) and frames whose tick has
  passed are dropped; a frame up to 5 frames (200 ms) late is still shown when it is the newest
  (counted), so a slightly slow engine still moves the mouth and the audio never waits.
* **clip** (``/humanv2``): pre-rendered frames + audio, started when the cycle is back at
  source frame 0 going forward (at once for a still avatar), so the clip, rendered from frame 0,
  joins the idle loop without a jump; afterwards the cycle continues from the clip's end.

The engine stays transport-free: it sees only audio chunks and yields frames. Sinks
(:mod:`digihuman.streaming`) get ``write(image, audio, index)`` and must not block; a sink
with ``outputs`` (the one encoder feeding the containers) has their health listed after its own.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from digihuman.engines.base import LipSyncEngine, PreparedAvatar
from digihuman.timing import frame_count, frame_span, pingpong
from digihuman.types import SAMPLE_RATE, AudioChunk, SegmentEnd

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """What the pacer hands each tick to (see :mod:`digihuman.streaming`)."""

    name: str

    def write(self, image: np.ndarray, audio: np.ndarray, index: int) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# audio segmentation
# --------------------------------------------------------------------------------------------


def split_at_silences(
    samples: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_s: float = 8.0,
    min_s: float = 1.0,
    hop_s: float = 0.02,
) -> list[np.ndarray]:
    """Cut speech into segments of at most ``max_s`` seconds, each cut at the quietest
    ``hop_s`` window between ``min_s`` and ``max_s`` after the previous cut (a pause)."""
    x = np.asarray(samples, np.float32).reshape(-1)
    n, hop = len(x), max(1, int(hop_s * sample_rate))
    max_n, min_n = int(max_s * sample_rate), int(min_s * sample_rate)
    out: list[np.ndarray] = []
    start = 0
    while n - start > max_n:
        lo, hi = start + min_n, start + max_n - hop
        m = (hi - lo) // hop
        if m <= 0:
            cut = start + max_n
        else:
            w = x[lo : lo + m * hop].reshape(m, hop)
            cut = lo + int(np.argmin((w * w).mean(axis=1))) * hop + hop // 2
        out.append(x[start:cut])
        start = cut
    if n > start:
        out.append(x[start:])
    return out


def fit_to_frames(seg: np.ndarray, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The segment padded or trimmed (< half a frame) to exactly its frames' samples."""
    f = frame_count(len(seg), sample_rate, fps)
    end = frame_span(f - 1, sample_rate, fps)[1] if f else 0
    if len(seg) >= end:
        return seg[:end]
    return np.concatenate([seg, np.zeros(end - len(seg), np.float32)])


# --------------------------------------------------------------------------------------------
# queued items
# --------------------------------------------------------------------------------------------


@dataclass
class _Item:
    id: str
    kind: str  # "speech" | "clip"
    audio: np.ndarray  # fitted to whole frames (16 kHz)
    n_frames: int
    segments: list[np.ndarray] = field(default_factory=list)  # speech
    frames: Any = None  # clip: (N, H, W, 3) uint8
    enqueued_at: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    producer: Any = None  # speech: started ahead of its tick (see LiveSession._prestart_locked)
    start_tick: int | None = None  # the tick its producer was started for


class _Producer:
    """Runs the engine's realtime ``generate`` for one utterance on its own thread."""

    def __init__(
        self,
        engine: LipSyncEngine,
        prepared: PreparedAvatar,
        item: _Item,
        start_frame: int,
        fps: float,
        ahead: int,
    ) -> None:
        self.item = item
        self.cancel = threading.Event()  # this producer only (the item may get another)
        self.frames: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(maxsize=ahead)
        self.error: BaseException | None = None
        self._pending: tuple[int, np.ndarray] | None = None
        self._engine, self._prepared = engine, prepared
        self._start, self._fps = start_frame, fps
        self._t = threading.Thread(target=self._run, name=f"live-gen-{item.id}", daemon=True)
        self._t.start()

    def _chunks(self) -> Iterator[AudioChunk | SegmentEnd]:
        for seg in self.item.segments:
            for j in range(frame_count(len(seg), SAMPLE_RATE, self._fps)):
                if self._cancelled():
                    yield SegmentEnd("interrupted")
                    return
                a, b = frame_span(j, SAMPLE_RATE, self._fps)
                yield AudioChunk(seg[a:b])
            yield SegmentEnd()

    def _run(self) -> None:
        try:
            gen = self._engine.generate(self._prepared, self._chunks(), start_frame=self._start)
            for j, vf in enumerate(gen):
                while not self._cancelled():
                    try:
                        self.frames.put((j, vf.image), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._cancelled():
                    return
        except BaseException as exc:  # reported through the session's status
            self.error = exc
            log.exception("live: the engine failed on utterance %s", self.item.id)
        finally:
            with contextlib.suppress(queue.Full):  # a full queue: the reader stops at cancel
                self.frames.put_nowait(None)

    def take(self, j: int, wait_s: float = 0.0, max_late: int = 5) -> tuple[np.ndarray | None, int]:
        """The newest frame ``k <= j`` ready within ``wait_s`` and how late it is (``j - k``);
        (None, 0) when none is ready or the newest is more than ``max_late`` frames late."""
        deadline = time.monotonic() + wait_s
        best: tuple[int, np.ndarray] | None = None
        while True:
            if self._pending is not None:
                if self._pending[0] > j:
                    break
                best, self._pending = self._pending, None
                if best[0] == j:
                    break
            try:
                left = deadline - time.monotonic()
                got = self.frames.get(timeout=left) if left > 0 else self.frames.get_nowait()
            except queue.Empty:
                break
            if got is None:
                self.frames.put_nowait(None)  # stay at the end
                break
            self._pending = got
        if best is None or j - best[0] > max_late:
            return None, 0
        return best[1], j - best[0]

    def _cancelled(self) -> bool:
        return self.cancel.is_set() or self.item.cancel.is_set()

    def stop(self) -> None:
        self.cancel.set()


# --------------------------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------------------------


class LiveSession:
    """One room's live stream. Thread-safe: ``say``/``play``/``interrupt``/``status`` may be
    called from any thread while the pacer runs."""

    def __init__(
        self,
        engine: LipSyncEngine,
        prepared: PreparedAvatar,
        *,
        sinks: Sequence[FrameSink] = (),
        fps: float = 25.0,
        name: str = "room",
        max_segment_s: float = 8.0,
        ahead_frames: int = 12,
        max_queue: int = 32,
        max_lag_s: float = 1.0,
        strict: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.prepared = engine, prepared
        self.fps, self.name = float(fps), name
        self.sinks = list(sinks)
        self.max_segment_s, self.ahead, self.max_queue = max_segment_s, ahead_frames, max_queue
        self.max_lag_s = max_lag_s
        self.strict = strict  # wait for every engine frame (offline rendering and tests)
        self.clock = clock
        self._lock = threading.Lock()
        self._queue: deque[_Item] = deque()
        self._cur: _Item | None = None
        self._prod: _Producer | None = None
        self._n0 = 0  # tick at which the current item started
        self._last: np.ndarray | None = None
        self.tick = 0  # next tick to produce
        self.cycle = 0  # source-frame cycle counter
        self.samples_out = 0
        self.repeats = 0  # ticks that repeated a frame because the engine was late
        self.late = 0  # ticks that showed a frame up to 5 frames late (the engine is behind)
        self.skipped = 0  # ticks skipped because the pacer itself fell behind
        self.events: deque[dict[str, Any]] = deque(maxlen=64)  # started/finished per item
        self.first_frame_at: dict[str, float] = {}  # item id -> clock of its first tick
        self.last_activity = clock()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._n = prepared.n_frames
        self._rest_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._blinks = self._blink_schedule()
        self._silence = np.zeros(frame_span(0, SAMPLE_RATE, self.fps)[1], np.float32)

    # ---- commands ----------------------------------------------------------------------------
    def say(self, samples: np.ndarray, *, item_id: str | None = None) -> tuple[str, float]:
        """Queue speech (16 kHz mono float32); returns (id, seconds until it has played)."""
        segs = [
            fit_to_frames(s, self.fps) for s in split_at_silences(samples, max_s=self.max_segment_s)
        ]
        segs = [s for s in segs if len(s)]
        audio = np.concatenate(segs) if segs else np.zeros(0, np.float32)
        n = sum(frame_count(len(s), SAMPLE_RATE, self.fps) for s in segs)
        item = _Item(item_id or f"s{next(self._ids)}", "speech", audio, n, segments=segs)
        return item.id, self._enqueue(item)

    def play(
        self, frames: np.ndarray, samples: np.ndarray, *, item_id: str | None = None
    ) -> tuple[str, float]:
        """Queue a pre-rendered clip (frames at the session fps, resized to the avatar)."""
        frames = np.asarray(frames, np.uint8)
        w, h = self.prepared.size
        if frames.shape[1:3] != (h, w):
            import cv2

            frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
        n = len(frames)
        end = frame_span(n - 1, SAMPLE_RATE, self.fps)[1] if n else 0
        audio = np.asarray(samples, np.float32).reshape(-1)[:end]
        audio = np.concatenate([audio, np.zeros(end - len(audio), np.float32)])
        item = _Item(item_id or f"c{next(self._ids)}", "clip", audio, n, frames=frames)
        return item.id, self._enqueue(item)

    def _enqueue(self, item: _Item) -> float:
        from digihuman.errors import QueueFull

        with self._lock:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(
                    f"room {self.name} already has {len(self._queue)} utterances queued; "
                    "wait or interrupt",
                    kind="live",
                    limit=self.max_queue,
                    retry_after_s=max(1.0, self._seconds_ahead_locked()),
                )
            ahead = self._seconds_ahead_locked()
            item.enqueued_at = self.clock()
            self._queue.append(item)
            if not self.strict:
                self._prestart_locked()
            self.last_activity = item.enqueued_at
        return ahead + item.n_frames / self.fps

    def _seconds_ahead_locked(self) -> float:
        left = 0
        if self._cur is not None:
            left += max(0, self._cur.n_frames - (self.tick - self._n0))
        left += sum(i.n_frames for i in self._queue)
        return left / self.fps

    def interrupt(self) -> int:
        """Cut what is playing now and clear the queue; returns how many items were dropped."""
        with self._lock:
            dropped = len(self._queue) + (self._cur is not None)
            for it in self._queue:
                it.cancel.set()
            self._queue.clear()
            if self._cur is not None:
                self._finish_locked("interrupted")
            self.last_activity = self.clock()
        return dropped

    def status(self) -> dict[str, Any]:
        with self._lock:
            cur = self._cur
            if cur is not None:
                state = "speaking" if cur.kind == "speech" else "clip"
            else:  # "starting": queued, it begins on the next tick (or cycle start, a clip)
                state = "starting" if self._queue else "idle"
            return {
                "state": state,
                "current": None
                if cur is None
                else {
                    "id": cur.id,
                    "kind": cur.kind,
                    "seconds": round(cur.n_frames / self.fps, 3),
                    "played": round((self.tick - self._n0) / self.fps, 3),
                },
                "queued": [
                    {"id": i.id, "kind": i.kind, "seconds": round(i.n_frames / self.fps, 3)}
                    for i in self._queue
                ],
                "seconds_ahead": round(self._seconds_ahead_locked(), 3),
                "frames": self.tick,
                "repeated_frames": self.repeats,
                "late_frames": self.late,
                "skipped_ticks": self.skipped,
                "fps": self.fps,
                "events": list(self.events)[-8:],
                # a sink with ``outputs`` (the encoder) lists them after itself
                "sinks": [x.health() for s in self.sinks for x in (s, *getattr(s, "outputs", ()))],
            }

    # ---- frames --------------------------------------------------------------------------------
    def _blink_schedule(self) -> Any:
        if getattr(self.engine, "blink", False) and hasattr(self.engine, "render"):
            from digihuman.engines.lipsync.lite import BlinkSchedule

            return BlinkSchedule(self.fps, int(getattr(self.engine, "seed", 0)))
        return None

    def idle_frame(self, c: int) -> np.ndarray:
        """The idle picture at cycle position ``c`` (rest pose, blinking)."""
        k = pingpong(c, self._n)
        render = getattr(self.engine, "render", None)
        if render is None:
            return np.asarray(self.prepared.frames[k])
        blink = self._blinks.closure(c) if self._blinks is not None else 0.0
        if blink > 0:
            return np.asarray(render(self.prepared, k, 0.0, 0.0, blink))
        img = self._rest_cache.get(k)
        if img is None:
            img = np.asarray(render(self.prepared, k, 0.0, 0.0, 0.0))
            self._rest_cache[k] = img
            while len(self._rest_cache) > 64:
                self._rest_cache.popitem(last=False)
        return img

    def _finish_locked(self, how: str) -> None:
        cur = self._cur
        if cur is None:
            return
        cur.cancel.set()
        if self._prod is not None:
            self._prod.stop()
        self.events.append(
            {"id": cur.id, "event": how, "tick": self.tick, "at": round(time.time(), 4)}
        )
        self._cur, self._prod = None, None

    def _start_next_locked(self) -> None:
        if self._cur is not None or not self._queue:
            return
        nxt = self._queue[0]
        if nxt.kind == "clip" and self._n > 1 and self.cycle % (2 * self._n - 2) != 0:
            return  # wait for the cycle to come back to source frame 0 (going forward)
        if nxt.start_tick is not None and self.tick < nxt.start_tick:
            return  # its producer is warming up for that tick
        self._queue.popleft()
        self._cur, self._n0 = nxt, self.tick
        if nxt.kind == "speech":
            if nxt.producer is not None and nxt.start_tick == self.tick:
                self._prod = nxt.producer
            else:  # not pre-started, or for another tick (the pacer skipped): start it now
                if nxt.producer is not None:
                    nxt.producer.stop()
                self._prod = _Producer(
                    self.engine, self.prepared, nxt, self.cycle, self.fps, self.ahead
                )
            nxt.producer = None
        self.events.append(
            {"id": nxt.id, "event": "started", "tick": self.tick, "at": round(time.time(), 4)}
        )

    def _prestart_locked(self) -> None:
        """Start the next utterance's engine before its first tick, once that tick is known
        (the current item's end, or the next tick when idle), so its frames are ready."""
        if not self._queue:
            return
        nxt = self._queue[0]
        if nxt.kind != "speech" or nxt.producer is not None:
            return
        if self._cur is None:
            start = self.tick + 1
        else:
            start = self._n0 + self._cur.n_frames
            if start - self.tick > self.ahead:
                return
        nxt.start_tick = start
        nxt.producer = _Producer(
            self.engine, self.prepared, nxt, self.cycle + (start - self.tick), self.fps, self.ahead
        )

    def step(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Produce tick ``self.tick``: (image, audio block, speaking) — and advance."""
        with self._lock:
            self._start_next_locked()
            cur, prod = self._cur, self._prod
            j = self.tick - self._n0
            span = frame_span(self.tick, SAMPLE_RATE, self.fps)
            nsamp = span[1] - span[0]
            img: np.ndarray | None = None
            speaking = False
            if cur is not None:
                a, b = frame_span(j, SAMPLE_RATE, self.fps)
                audio = cur.audio[a:b]
                if len(audio) != nsamp:
                    audio = np.resize(audio, nsamp) if len(audio) else np.zeros(nsamp, np.float32)
                if cur.kind == "clip":
                    img = cur.frames[j]
                else:
                    assert prod is not None
                    # the first frame may take the engine a moment: wait for it up to half
                    # a tick (later frames are ready ahead, ``ahead_frames`` of them)
                    img, late = prod.take(
                        j, 10.0 if self.strict else 0.5 / self.fps if j == 0 else 0.0
                    )
                    self.late += late > 0
                    if img is None:
                        self.repeats += 1
                        img = self._last if self._last is not None else self.idle_frame(self.cycle)
                speaking = True
                if j == 0:
                    self.first_frame_at[cur.id] = self.clock()
                    while len(self.first_frame_at) > 64:
                        self.first_frame_at.pop(next(iter(self.first_frame_at)))
                if j + 1 >= cur.n_frames:
                    self._finish_locked("finished")
            else:
                audio = self._silence if nsamp == len(self._silence) else np.zeros(nsamp)
        if img is None:
            img = self.idle_frame(self.cycle)
        self._last = img
        with self._lock:
            self.tick += 1
            self.cycle += 1
            if not self.strict:  # (strict: each item starts its engine at its own tick)
                self._prestart_locked()
        self.samples_out += len(audio)
        return img, audio, speaking

    # ---- the pacer -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._t0 = self.clock()
        self._thread = threading.Thread(target=self._run, name=f"live-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.fps
        while not self._stop.is_set():
            due = self._t0 + self.tick * period
            now = self.clock()
            if now < due:
                self._stop.wait(due - now)
                continue
            if now - due > self.max_lag_s:  # the machine stalled: jump to now (counted)
                behind = int((now - due) * self.fps)
                with self._lock:
                    self.skipped += behind
                    self._t0 += behind * period
                log.warning("live %s: %d tick(s) late, skipped", self.name, behind)
            index = self.tick
            img, audio, _ = self.step()
            for s in self.sinks:
                try:
                    s.write(img, audio, index)
                except Exception:  # a sink never stops the stream
                    log.exception("live %s: sink %s failed", self.name, s.name)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for it in self._queue:
                it.cancel.set()
            self._queue.clear()
            self._finish_locked("stopped")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for s in self.sinks:
            try:
                s.close()
            except Exception:
                log.exception("live %s: closing sink %s failed", self.name, s.name)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
