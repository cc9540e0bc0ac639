"""Audio plumbing for speech streams: an exact streaming resampler, click-free joins, and
helpers that turn a chunk stream into one array.

:class:`StreamResampler` gives the same samples whether audio is pushed in one piece or in
many chunks (each output sample is a fixed windowed-sinc sum over the same input samples), which
is what lets ``speech_stream`` resample TTS chunks as they arrive without seams.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from math import gcd

import numpy as np

from digihuman.types import AudioChunk

_BLOCK = 4096  # output samples computed per vectorised step


class StreamResampler:
    """Band-limited resampling of a stream, identical for any chunking of the same input."""

    def __init__(self, src_rate: int, dst_rate: int, zero_crossings: int = 16) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError("sample rates must be positive")
        g = gcd(src_rate, dst_rate)
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._up, self._down = dst_rate // g, src_rate // g  # L, M
        self._identity = src_rate == dst_rate
        cutoff = min(1.0, self._up / self._down) * 0.94  # fraction of the input Nyquist
        k = int(np.ceil(zero_crossings / cutoff))
        self._k = k
        offsets = np.arange(-k + 1, k + 1, dtype=np.float64)  # input taps around floor(t)
        phases = np.arange(self._up, dtype=np.float64) / self._up  # fractional part of t
        tau = offsets[None, :] - phases[:, None]
        window = np.kaiser(2 * k + 1, 8.0)
        win = np.interp(tau, np.arange(-k, k + 1), window)
        w = cutoff * np.sinc(cutoff * tau) * win
        w /= w.sum(axis=1, keepdims=True)
        self._weights = w.astype(np.float64)
        self._offsets = np.arange(-k + 1, k + 1)
        self._buf = np.zeros(k, dtype=np.float64)  # input history, with k zeros before t=0
        self._base = -k  # absolute input index of _buf[0]
        self._n_in = 0
        self._n_out = 0

    def _compute(self, k_end: int) -> np.ndarray:
        outs = []
        while self._n_out < k_end:
            ks = np.arange(self._n_out, min(k_end, self._n_out + _BLOCK), dtype=np.int64)
            n0 = (ks * self._down) // self._up
            phase = (ks * self._down) % self._up
            idx = n0[:, None] + self._offsets[None, :] - self._base
            outs.append((self._buf[idx] * self._weights[phase]).sum(axis=1))
            self._n_out = int(ks[-1]) + 1
        # forget input no longer needed by the next output sample
        next_n0 = (self._n_out * self._down) // self._up
        drop = next_n0 - self._k + 1 - self._base
        if drop > 0:
            self._buf = self._buf[drop:]
            self._base += drop
        if not outs:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(outs).astype(np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples; returns the output samples that are now fully determined."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self._identity:
            return x.copy()
        self._buf = np.concatenate([self._buf, x.astype(np.float64)])
        self._n_in += len(x)
        # output k needs input up to floor(k*M/L) + k_taps
        last_needed = self._n_in - 1 - self._k
        if last_needed < 0:
            return np.zeros(0, dtype=np.float32)
        k_end = (last_needed * self._up + self._up - 1) // self._down + 1
        return self._compute(k_end)

    def flush(self) -> np.ndarray:
        """The remaining output (the input is treated as followed by silence)."""
        if self._identity:
            return np.zeros(0, dtype=np.float32)
        total = -(-self._n_in * self._up // self._down)  # ceil(n_in * L / M)
        self._buf = np.concatenate([self._buf, np.zeros(self._k + 1, dtype=np.float64)])
        return self._compute(total)


def resample_exact(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Whole-array resampling with the same filter as :class:`StreamResampler`."""
    r = StreamResampler(src_rate, dst_rate)
    return np.concatenate([r.push(x), r.flush()])


def resample_stream(chunks: Iterable[AudioChunk], dst_rate: int) -> Iterator[AudioChunk]:
    """Resample a chunk stream to ``dst_rate`` as it flows (the rate may change mid-stream)."""
    res: StreamResampler | None = None
    for chunk in chunks:
        if res is None or res.src_rate != chunk.sample_rate:
            if res is not None:
                tail = res.flush()
                if len(tail):
                    yield AudioChunk(tail, dst_rate)
            res = StreamResampler(chunk.sample_rate, dst_rate)
        out = res.push(chunk.samples)
        if len(out):
            yield AudioChunk(out, dst_rate)
    if res is not None:
        tail = res.flush()
        if len(tail):
            yield AudioChunk(tail, dst_rate)


def fade_edges(x: np.ndarray, sample_rate: int, ms: float = 8.0) -> np.ndarray:
    """Raised-cosine fade-in and fade-out so that pieces can be butted together without clicks."""
    x = np.asarray(x, dtype=np.float32).copy()
    n = min(len(x) // 2, int(sample_rate * ms / 1000.0))
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))).astype(np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def join_pieces(pieces: list[np.ndarray], sample_rate: int, gap_ms: float = 40.0) -> np.ndarray:
    """Fade each piece's edges and join them with a short silence between them."""
    gap = np.zeros(int(sample_rate * gap_ms / 1000.0), dtype=np.float32)
    out: list[np.ndarray] = []
    for i, p in enumerate(pieces):
        if i:
            out.append(gap)
        out.append(fade_edges(p, sample_rate))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def collect(chunks: Iterable[AudioChunk]) -> tuple[np.ndarray, int]:
    """Concatenate a chunk stream into one array; returns (samples, sample_rate)."""
    parts: list[np.ndarray] = []
    rate = 0
    for c in chunks:
        if rate and c.sample_rate != rate:
            raise ValueError("a chunk stream changed sample rate; resample it first")
        rate = c.sample_rate
        parts.append(np.asarray(c.samples, dtype=np.float32))
    if not parts:
        return np.zeros(0, dtype=np.float32), rate
    return np.concatenate(parts), rate


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
