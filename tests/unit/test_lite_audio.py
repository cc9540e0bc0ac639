"""Audio → mouth parameters of the lite engine on real speech (espeak-ng)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from digihuman.engines.lipsync.lite_audio import (
    WINDOW_S,
    MouthTracker,
    frames_from_stream,
    lookahead_s,
    mouth_params,
)
from digihuman.media.audio import load_audio
from digihuman.timing import frame_count, frame_span
from digihuman.types import AudioChunk, SegmentEnd

SR = 16000


def say(tmp: Path, text: str, name: str) -> np.ndarray:
    assert shutil.which("espeak-ng"), "espeak-ng is needed (scripts/install.sh installs it)"
    wav = tmp / f"{name}.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    return load_audio(wav)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    tmp = Path(tmp_path_factory.mktemp("vowels"))
    pad = np.zeros(SR // 2, dtype=np.float32)
    out = {
        "speech": say(tmp, "Hello, my name is Alex. How are you today?", "speech"),
        "ah": say(tmp, "ah ah ah", "ah"),
        "ee": say(tmp, "ee ee ee", "ee"),
        "oo": say(tmp, "ooh ooh ooh", "oo"),
        "papa": say(tmp, "papa papa papa", "papa"),
    }
    out["speech"] = np.concatenate([pad, out["speech"], pad])
    return out


def envelope(x: np.ndarray, n: int) -> np.ndarray:
    return np.array([np.sqrt(np.mean(x[slice(*frame_span(i, SR, 25.0))] ** 2)) for i in range(n)])


def test_silence_and_noise_floor_keep_the_mouth_closed() -> None:
    rng = np.random.default_rng(0)
    for x in (np.zeros(SR * 2, np.float32), (0.001 * rng.standard_normal(SR * 2)).astype("f4")):
        params = mouth_params(x)
        assert len(params) == 50
        assert all(p.openness == 0.0 and p.width == 0.0 and not p.voiced for p in params)


def test_openness_follows_the_loudness_of_speech(clips: dict[str, np.ndarray]) -> None:
    x = clips["speech"]
    params = mouth_params(x)
    o = np.array([p.openness for p in params])
    assert len(o) == frame_count(len(x), SR, 25.0)
    assert o[:10].max() == 0.0 and o[-6:].max() == 0.0  # the silent padding stays closed
    assert o.max() > 0.8 and 0.2 < o.mean() < 0.7
    assert np.corrcoef(o, envelope(x, len(o)))[0, 1] > 0.6


def test_quiet_and_loud_speakers_both_open_the_mouth(clips: dict[str, np.ndarray]) -> None:
    x = clips["speech"]
    ref = np.array([p.openness for p in mouth_params(x)])
    for gain in (0.03, 3.0):
        o = np.array([p.openness for p in mouth_params(np.clip(x * gain, -1, 1))])
        assert o.max() > 0.8, gain
        assert np.corrcoef(o, ref)[0, 1] > 0.85, gain


def test_vowels_differ_in_width_and_openness(clips: dict[str, np.ndarray]) -> None:
    def mean(name: str) -> tuple[float, float]:
        voiced = [p for p in mouth_params(clips[name]) if p.voiced]
        return float(np.mean([p.openness for p in voiced])), float(
            np.mean([p.width for p in voiced])
        )

    (o_ah, w_ah), (o_ee, w_ee), (o_oo, w_oo) = mean("ah"), mean("ee"), mean("oo")
    assert w_ee > 0.3 and w_oo < -0.2 and w_oo < w_ah < w_ee  # spread "ee", rounded "oo"
    assert o_ah > o_ee + 0.15 and o_ah > o_oo + 0.15  # "ah" opens the jaw most


def test_the_lips_shut_on_the_closure_of_a_bilabial_stop(clips: dict[str, np.ndarray]) -> None:
    # "papa papa papa": six open vowels, each after the ~70 ms silence of a "p" closure
    o = np.array([p.openness for p in mouth_params(clips["papa"])])
    peaks = [i for i in range(1, len(o) - 1) if o[i] >= max(o[i - 1], o[i + 1]) and o[i] > 0.6]
    assert len(peaks) >= 5
    dips = [o[a:b].min() for a, b in itertools.pairwise(peaks)]
    assert len(dips) >= 4 and sorted(dips)[len(dips) // 2] < 0.12, dips  # shut, not half open


def test_params_do_not_depend_on_audio_past_the_lookahead(clips: dict[str, np.ndarray]) -> None:
    x = clips["speech"]
    ref = mouth_params(x)
    cut = len(x) // 2
    y = x.copy()
    y[cut:] = np.random.default_rng(1).uniform(-1, 1, len(x) - cut)
    changed = mouth_params(y)
    look = round(lookahead_s(25.0) * SR)
    for i, (a, b) in enumerate(zip(ref, changed, strict=True)):
        if frame_span(i, SR, 25.0)[1] + look <= cut:
            assert a == b, i


def test_chunking_never_changes_the_params(clips: dict[str, np.ndarray]) -> None:
    x = clips["speech"]
    ref = mouth_params(x)
    rng = np.random.default_rng(3)
    for max_len in (7, 700, 7000):
        stream: list[AudioChunk | SegmentEnd] = []
        i = 0
        while i < len(x):
            n = int(rng.integers(1, max_len + 1))
            stream.append(AudioChunk(x[i : i + n]))
            i += n
        stream.append(SegmentEnd())
        tracker = MouthTracker(25.0)
        assert list(frames_from_stream(stream, 25.0, WINDOW_S, tracker.step)) == ref


def test_a_long_live_segment_keeps_memory_bounded() -> None:
    from digihuman.engines.lipsync.lite_audio import FrameScheduler

    rng = np.random.default_rng(5)
    x = (0.1 * rng.standard_normal(SR * 20)).astype(np.float32)
    sched = FrameScheduler(25.0, WINDOW_S)
    windows = []
    biggest = 0
    for i in range(0, len(x), 1600):
        windows += sched.feed(x[i : i + 1600])
        biggest = max(biggest, len(sched._samples()))
    windows += sched.end()
    assert len(windows) == 500
    assert biggest < 7 * SR  # not the whole 20 s
    half = len(windows[0]) // 2
    for i in (0, 137, 499):  # each window is the audio centred on its frame
        a, b = frame_span(i, SR, 25.0)
        c = (a + b) // 2
        ref = np.zeros(2 * half, np.float32)
        lo, hi = max(c - half, 0), min(c + half, len(x))
        ref[lo - (c - half) : hi - (c - half)] = x[lo:hi]
        assert np.array_equal(windows[i], ref), i
