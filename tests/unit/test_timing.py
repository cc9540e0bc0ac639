"""Audio ↔ frame index maths."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from digihuman.timing import frame_count, frame_of_time, frame_span, frame_start_sample, pingpong

RATES = st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000])
FPS = st.sampled_from([24.0, 25.0, 30.0, 50.0, 60.0, 29.97])


@given(n=st.integers(0, 10_000_000), sr=RATES, fps=FPS)
def test_frame_count_is_duration_within_half_a_frame(n: int, sr: int, fps: float) -> None:
    frames = frame_count(n, sr, fps)
    duration = n / sr
    assert abs(frames / fps - duration) <= 0.5 / fps + 1e-9
    assert frames >= 0


@given(n=st.integers(0, 1_000_000), sr=RATES, fps=FPS)
def test_frame_count_is_monotonic(n: int, sr: int, fps: float) -> None:
    assert frame_count(n + 1, sr, fps) >= frame_count(n, sr, fps)


@given(i=st.integers(0, 100_000), sr=RATES, fps=FPS)
def test_spans_tile_exactly(i: int, sr: int, fps: float) -> None:
    a0, a1 = frame_span(i, sr, fps)
    b0, _ = frame_span(i + 1, sr, fps)
    assert a1 == b0
    assert a0 <= a1
    # each span is one frame long to within a sample
    assert abs((a1 - a0) - sr / fps) <= 1.0


@given(i=st.integers(0, 100_000), fps=FPS)
def test_frame_of_time_inverts_start(i: int, fps: float) -> None:
    assert frame_of_time(i / fps, fps) == i


@given(i=st.integers(0, 100_000), sr=RATES)
def test_start_sample_at_25fps(i: int, sr: int) -> None:
    assert frame_start_sample(i, sr, 25.0) == (i * sr) // 25


@given(i=st.integers(0, 10_000), n=st.integers(1, 300))
def test_pingpong_stays_in_range_and_moves_by_one(i: int, n: int) -> None:
    a, b = pingpong(i, n), pingpong(i + 1, n)
    assert 0 <= a < n
    if n > 1:
        assert abs(a - b) == 1  # no jump cut, ever
    else:
        assert a == b == 0


def test_pingpong_sequence() -> None:
    assert [pingpong(i, 4) for i in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
