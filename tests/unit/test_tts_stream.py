"""Speech stream plumbing: exact streaming resampling, click-free joins, WAV parsing."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digihuman.engines.tts.http import SpeechServiceError, WavStreamParser
from digihuman.engines.tts.stream import (
    StreamResampler,
    collect,
    fade_edges,
    join_pieces,
    resample_exact,
    resample_stream,
)
from digihuman.types import AudioChunk

RNG = np.random.default_rng(0)
NOISE = (RNG.standard_normal(22050) * 0.3).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=30),
    st.sampled_from([(22050, 16000), (24000, 16000), (16000, 22050), (44100, 16000)]),
)
def test_streaming_resampler_equals_whole_array(cuts: list[int], rates: tuple[int, int]) -> None:
    src, dst = rates
    whole = resample_exact(NOISE, src, dst)
    r = StreamResampler(src, dst)
    bounds = np.cumsum(cuts)
    pieces = np.split(NOISE, bounds[bounds < len(NOISE)])
    streamed = np.concatenate([r.push(p) for p in pieces] + [r.flush()])
    assert len(whole) == int(np.ceil(len(NOISE) * dst / src))
    np.testing.assert_array_equal(streamed, whole)


def test_resampler_keeps_a_tone_and_removes_aliases() -> None:
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample_exact(tone, 22050, 16000)
    ref = np.sin(2 * np.pi * 440 * np.arange(len(out)) / 16000)
    assert np.max(np.abs(out[300:-300] - ref[300:-300])) < 1e-3
    # 10 kHz is above the new Nyquist (8 kHz): it must be filtered out, not folded down
    high = np.sin(2 * np.pi * 10000 * t).astype(np.float32)
    assert np.sqrt(np.mean(resample_exact(high, 22050, 16000)[300:-300] ** 2)) < 0.01


def test_resample_stream_of_chunks_matches_whole_and_handles_rate_changes() -> None:
    chunks = [AudioChunk(p, 22050) for p in np.array_split(NOISE, 7)]
    x, rate = collect(resample_stream(chunks, 16000))
    assert rate == 16000
    np.testing.assert_array_equal(x, resample_exact(NOISE, 22050, 16000))
    mixed = [AudioChunk(NOISE[:1000], 22050), AudioChunk(NOISE[:1000], 16000)]
    y, _ = collect(resample_stream(mixed, 16000))
    assert len(y) == int(np.ceil(1000 * 16000 / 22050)) + 1000
    np.testing.assert_array_equal(y[-1000:], NOISE[:1000])


def test_joins_have_no_clicks() -> None:
    rate = 22050
    t = np.arange(rate // 2) / rate
    loud = (0.9 * np.sin(2 * np.pi * 200 * t)).astype(np.float32) + 0.5  # DC offset: worst case
    joined = join_pieces([loud, -loud, loud], rate)
    # the largest sample-to-sample step is that of the signal itself, not a jump at a seam
    assert np.max(np.abs(np.diff(joined))) <= np.max(np.abs(np.diff(loud))) + 0.02
    faded = fade_edges(loud, rate)
    assert faded[0] == 0.0 and abs(faded[-1]) < 1e-6


def _wav_header(rate: int, channels: int = 1, size: int = 0xFFFFFFFF) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"LIST"
        + struct.pack("<I", 4)
        + b"INFO"
        + b"data"
        + struct.pack("<I", size)
    )


def test_wav_parser_byte_by_byte_with_streaming_header() -> None:
    pcm = (NOISE[:500] * 32767).astype("<i2")
    data = _wav_header(24000) + pcm.tobytes()
    p = WavStreamParser()
    out = np.concatenate([p.feed(data[i : i + 1]) for i in range(len(data))])
    assert p.sample_rate == 24000
    np.testing.assert_allclose(out, pcm.astype(np.float32) / 32768.0)


def test_wav_parser_stereo_raw_and_errors() -> None:
    stereo = np.stack([np.full(10, 1000), np.full(10, 3000)], axis=1).astype("<i2")
    p = WavStreamParser()
    out = p.feed(_wav_header(16000, channels=2) + stereo.tobytes())
    np.testing.assert_allclose(out, np.full(10, 2000 / 32768.0))
    raw = WavStreamParser(raw_pcm_rate=22050)
    assert len(raw.feed(b"\x00\x01\x00")) == 1 and len(raw.feed(b"\x02")) == 1
    with pytest.raises(SpeechServiceError, match="WAV"):
        WavStreamParser().feed(b'{"error": "bad request"}')
