"""Audio → per-frame mouth parameters for the lite engine, streaming and chunk-invariant.

Frame ``i`` of a segment covers ``timing.frame_span(i)``. Its features come from a window of
``WINDOW_S`` seconds centred on the frame's centre, so a frame can be produced as soon as the
audio up to ``centre + WINDOW_S / 2`` is known: the declared lookahead past the frame's end is
:data:`LOOKAHEAD_S`. Samples outside the segment count as silence, so feeding a clip whole or in
chunks of any size gives exactly the same parameters (the state only advances frame by frame).

Parameters per frame (:class:`MouthParams`):

* ``openness`` in [0, 1]: the loudness (RMS in dB of the window's central 32 ms, so that the
  closure of a "p" or "b" shuts the lips) between an adaptive noise floor and an adaptive robust
  peak (so quiet and loud speakers both work), scaled by how open the vowel is
  (share of the energy in 500-1300 Hz, a high first formant), gated with hysteresis and a short
  hold so that silence gives exactly 0 (a closed mouth held still, no jitter), smoothed with
  attack/release.
* ``width`` in [-1, 1]: spread lips (> 0, "ee": energy above 1700 Hz, a high second formant)
  versus rounded lips (< 0, "oo": energy concentrated below 500 Hz), smoothed.

The adaptive state (floor, peak, smoothing) carries over from one segment to the next within a
``generate`` call, as a live session's utterances follow each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from digihuman.errors import InputError
from digihuman.timing import frame_count, frame_span
from digihuman.types import SAMPLE_RATE, AudioChunk, SegmentEnd

WINDOW_S = 0.064
"""Analysis window length, centred on each frame's centre."""

FPS_REF = 25.0


def lookahead_s(fps: float) -> float:
    """Audio needed past a frame's end before the frame can be produced."""
    return max(0.0, WINDOW_S / 2 - 0.5 / fps)


LOOKAHEAD_S = lookahead_s(FPS_REF)
"""The lookahead at 25 fps (12 ms)."""


@dataclass(frozen=True)
class MouthParams:
    """The mouth shape for one frame."""

    openness: float  # 0 closed .. 1 wide open
    width: float  # -1 rounded .. 0 neutral .. 1 spread
    voiced: bool  # the gate is open (someone is speaking)
    level_db: float  # the frame's RMS level in dBFS (for diagnostics and benches)


T = TypeVar("T")


class FrameScheduler:
    """Turns an audio stream into per-frame sample windows, chunk-invariantly.

    ``feed`` returns the windows of the frames that became computable; ``end`` flushes the
    segment (windows past its end are padded with silence, so the last partial frame is too) and
    starts a new one. Memory stays bounded on long live segments.
    """

    TRIM_SAMPLES = 5 * SAMPLE_RATE

    def __init__(self, fps: float, window_s: float, sample_rate: int = SAMPLE_RATE) -> None:
        self.fps = float(fps)
        self.sample_rate = sample_rate
        self.half = round(window_s * sample_rate / 2)
        self._reset()

    def _reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._chunks: list[np.ndarray] = []
        self._off = 0  # absolute sample index of _buf[0]
        self._n = 0  # samples received in this segment
        self._next = 0  # next frame index within the segment

    def _centre(self, i: int) -> int:
        s, e = frame_span(i, self.sample_rate, self.fps)
        return (s + e) // 2

    def _samples(self) -> np.ndarray:
        if self._chunks:
            self._buf = np.concatenate([self._buf, *self._chunks])
            self._chunks = []
        return self._buf

    def _window(self, i: int) -> np.ndarray:
        c = self._centre(i) - self._off
        return window(self._samples(), c - self.half, c + self.half)

    def feed(self, samples: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size:
            self._chunks.append(x)
            self._n += int(x.size)
        out: list[np.ndarray] = []
        known = frame_count(self._n, self.sample_rate, self.fps)
        while self._next < known and self._centre(self._next) + self.half <= self._n:
            out.append(self._window(self._next))
            self._next += 1
        drop = self._centre(self._next) - self.half - self._off
        if drop > self.TRIM_SAMPLES:
            self._buf = self._samples()[drop:].copy()
            self._off += drop
        return out

    def end(self) -> list[np.ndarray]:
        total = frame_count(self._n, self.sample_rate, self.fps)
        out = []
        while self._next < total:
            out.append(self._window(self._next))
            self._next += 1
        self._reset()
        return out


def window(buf: np.ndarray, start: int, end: int) -> np.ndarray:
    """``buf[start:end]`` with zeros outside ``[0, len(buf))``."""
    n = len(buf)
    if start >= 0 and end <= n:
        return buf[start:end]
    w = np.zeros(end - start, dtype=np.float32)
    a, b = max(start, 0), min(end, n)
    if b > a:
        w[a - start : b - start] = buf[a:b]
    return w


class MouthTracker:
    """The per-frame state machine: features of one window → :class:`MouthParams`.

    All adaptation (noise floor, peak, gate, smoothing) advances once per frame, so the result
    depends only on the sequence of windows, never on how the audio was chunked.
    """

    GATE_OPEN_DB = 10.0  # above the noise floor
    GATE_CLOSE_DB = 6.0
    ABS_OPEN_DB = -58.0  # nothing quieter than this ever opens the mouth
    ABS_CLOSE_DB = -62.0
    HOLD_FRAMES = 2  # keep the gate open this many frames after it would close
    RANGE_DB = 20.0  # loudness range mapped onto openness below the peak
    LOUD_EXP = 1.6  # openness = loudness ** LOUD_EXP (scaled by the vowel)
    ATTACK, RELEASE = 0.85, 0.9  # smoothing per 25 fps frame, opening / closing

    def __init__(self, fps: float, sample_rate: int = SAMPLE_RATE) -> None:
        self.fps = fps
        self.sample_rate = sample_rate
        n = round(WINDOW_S * sample_rate)
        self._hann = np.hanning(n).astype(np.float32)
        self._nfft = 1 << int(np.ceil(np.log2(n)))
        freqs = np.fft.rfftfreq(self._nfft, 1.0 / sample_rate)
        # Measured on espeak-ng and piper vowels: "ah" puts ~85 % of the 100-4000 Hz energy in
        # 500-1300 Hz (a high F1), "ee" ~70 % below 500 Hz and ~30 % above 1700 Hz (a high F2),
        # "oo" ~80 % below 500 Hz and little above 1700 Hz.
        self._b_low = (freqs >= 100) & (freqs < 500)
        self._b_f1 = (freqs >= 500) & (freqs < 1300)
        self._b_high = (freqs >= 1700) & (freqs < 4000)
        self._b_voice = (freqs >= 100) & (freqs < 4000)
        self._rate = fps / FPS_REF  # adaptation rates are per 25 fps frame
        self.floor_db = -60.0
        self.peak_db: float | None = None
        self.gate = False
        self.hold = 0
        self.openness = 0.0
        self.width = 0.0

    def step(self, w: np.ndarray) -> MouthParams:
        x = w.astype(np.float32, copy=False)
        if x.size != self._hann.size:
            x = np.resize(x, self._hann.size)
        rms = float(np.sqrt(np.mean(x * x) + 1e-12))
        db = 20.0 * np.log10(rms + 1e-9)
        # Adaptive noise floor: follows quiet frames down quickly, creeps up slowly.
        r = 1.0 / self._rate
        if db < self.floor_db:
            self.floor_db += (db - self.floor_db) * min(1.0, 0.5 * r)
        else:
            self.floor_db += min(db - self.floor_db, 0.05 * r)
        self.floor_db = float(np.clip(self.floor_db, -90.0, -40.0))
        # Gate with hysteresis and a short hold.
        if self.gate:
            closing = db < self.floor_db + self.GATE_CLOSE_DB or db < self.ABS_CLOSE_DB
            if closing:
                self.hold -= 1
                if self.hold < 0:
                    self.gate = False
            else:
                self.hold = self.HOLD_FRAMES
        elif db > self.floor_db + self.GATE_OPEN_DB and db > self.ABS_OPEN_DB:
            self.gate = True
            self.hold = self.HOLD_FRAMES
        # Robust peak: starts just above the first voiced frame, rises part way toward louder
        # frames and sinks slowly while speech stays below it (quiet and loud speakers alike).
        if self.gate:
            if self.peak_db is None:
                self.peak_db = db + 4.0
            elif db > self.peak_db:
                self.peak_db += (db - self.peak_db) * min(1.0, 0.3 * r)
            else:
                self.peak_db -= 0.15 * r
            self.peak_db = max(self.peak_db, self.floor_db + self.GATE_OPEN_DB + 6.0)
        target_o = 0.0
        target_w = 0.0
        if self.gate and self.peak_db is not None:
            lo = max(self.floor_db + self.GATE_CLOSE_DB, self.peak_db - self.RANGE_DB)
            # the loudness of the window's central half: a stop's closure ("p", "b": 50-100 ms
            # of near silence) shows as a deep dip, so the lips shut there
            q = x.size // 4
            core = x[q : x.size - q]
            db_o = 20.0 * np.log10(float(np.sqrt(np.mean(core * core) + 1e-12)) + 1e-9)
            loud = float(np.clip((db_o - lo) / max(self.peak_db - lo, 1.0), 0.0, 1.0))
            spec = np.abs(np.fft.rfft(x * self._hann, self._nfft)) ** 2
            total = float(spec[self._b_voice].sum()) + 1e-12
            low = float(spec[self._b_low].sum()) / total
            f1 = float(spec[self._b_f1].sum()) / total
            high = float(spec[self._b_high].sum()) / total
            vowel_open = float(np.clip((f1 - 0.15) / 0.45, 0.0, 1.0))
            spread = float(np.clip((high - 0.05) / 0.15, 0.0, 1.0))
            rounded = float(np.clip((low - 0.5) / 0.3, 0.0, 1.0)) * (1.0 - spread)
            target_o = loud**self.LOUD_EXP * (0.65 + 0.35 * vowel_open)
            target_w = float(np.clip(spread - rounded, -1.0, 1.0)) * min(1.0, 2.0 * loud)
        a_up, a_down = min(1.0, self.ATTACK * r), min(1.0, self.RELEASE * r)
        self.openness += (target_o - self.openness) * (a_up if target_o > self.openness else a_down)
        # the width settles as fast as the lips close once the gate shuts, and together with them
        self.width += (target_w - self.width) * min(1.0, (0.5 if self.gate else a_down) * r)
        # closed and held still: a closing mouth lands exactly on the rest pose (in a pause inside
        # speech too, where the gate is still open), not on ever smaller openings
        if self.openness < (0.03 if not self.gate else 0.01) and target_o == 0.0:
            self.openness = 0.0
        settled = self.openness == 0.0 and (not self.gate or target_w == 0.0)
        if abs(self.width) < (0.1 if settled else 0.03) and (settled or not self.gate):
            self.width = 0.0
        return MouthParams(
            openness=round(float(self.openness), 4),
            width=round(float(self.width), 4),
            voiced=self.gate,
            level_db=float(db),
        )


def frames_from_stream(
    audio: Iterable[AudioChunk | SegmentEnd],
    fps: float,
    window_s: float,
    compute: Callable[[np.ndarray], T],
) -> Iterator[T]:
    """Run ``compute`` on each frame's window as soon as it is known (see :class:`FrameScheduler`).

    Audio left without a closing ``SegmentEnd`` is flushed at the end of the stream.
    """
    sched = FrameScheduler(fps, window_s)
    pending = False
    for item in audio:
        if isinstance(item, SegmentEnd):
            for w in sched.end():
                yield compute(w)
            pending = False
            continue
        if not isinstance(item, AudioChunk):
            raise InputError(
                f"lip-sync audio stream got {type(item).__name__}, expected AudioChunk"
            )
        if item.sample_rate != SAMPLE_RATE:
            raise InputError(
                f"lip-sync audio must be {SAMPLE_RATE} Hz mono (got {item.sample_rate} Hz); "
                "resample with digihuman.media.audio.resample first"
            )
        pending = True
        for w in sched.feed(item.samples):
            yield compute(w)
    if pending:
        for w in sched.end():
            yield compute(w)


def mouth_params(
    samples: np.ndarray, fps: float = FPS_REF, sample_rate: int = SAMPLE_RATE
) -> list[MouthParams]:
    """Mouth parameters for a whole clip (one segment), e.g. for benches and tests."""
    tracker = MouthTracker(fps, sample_rate)
    stream: list[AudioChunk | SegmentEnd] = [
        AudioChunk(np.asarray(samples, dtype=np.float32), sample_rate),
        SegmentEnd(),
    ]
    return list(frames_from_stream(stream, fps, WINDOW_S, tracker.step))
