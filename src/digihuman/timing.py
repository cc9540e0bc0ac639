"""Audio ↔ video frame index maths, shared by every engine and the pipeline.

Frame ``i`` at ``fps`` covers the time span ``[i / fps, (i + 1) / fps)``. A clip of ``n``
samples at ``sr`` Hz gives ``round(n * fps / sr)`` frames, so the video lasts as long as the
audio to within half a frame.
"""

from __future__ import annotations

from fractions import Fraction


def frame_count(n_samples: int, sample_rate: int, fps: float) -> int:
    """Number of video frames for ``n_samples`` of audio (round half up)."""
    if n_samples <= 0:
        return 0
    exact = Fraction(n_samples) * Fraction(fps).limit_denominator(1001) / sample_rate
    return int(exact + Fraction(1, 2))


def frame_start_sample(i: int, sample_rate: int, fps: float) -> int:
    """First audio sample of frame ``i`` (floor of ``i * sr / fps``)."""
    return int(Fraction(i) * sample_rate / Fraction(fps).limit_denominator(1001))


def frame_span(i: int, sample_rate: int, fps: float) -> tuple[int, int]:
    """``[start, end)`` sample span of frame ``i``; spans of consecutive frames tile exactly."""
    return frame_start_sample(i, sample_rate, fps), frame_start_sample(i + 1, sample_rate, fps)


def frame_of_time(t: float, fps: float) -> int:
    """Index of the frame showing time ``t`` (seconds)."""
    return int(t * fps + 1e-9)


def pingpong(i: int, n: int) -> int:
    """Index into ``n`` source frames that loops forward then backward (no jump cut).

    0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... ; a single frame always gives 0.
    """
    if n <= 0:
        raise ValueError("pingpong needs at least one frame")
    if n == 1:
        return 0
    period = 2 * n - 2
    k = i % period
    return k if k < n else period - k
