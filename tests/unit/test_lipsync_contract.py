"""The lip-sync contract, checked on the lite engine and the fake: frame counts, chunked ==
whole, streaming lookahead, start_frame continuity through the forward-then-backward cycle."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from digihuman.engines.base import LIPSYNC, LipSyncEngine, PreparedAvatar, whole_audio
from digihuman.media.audio import load_audio
from digihuman.timing import frame_count, frame_span, pingpong
from digihuman.types import AudioChunk, SegmentEnd, VideoFrame

SR = 16000
ENGINES = ["lite", "fake"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """About 1.5 s of real speech made offline with espeak-ng, 16 kHz mono float32."""
    assert shutil.which("espeak-ng"), "espeak-ng is needed (scripts/install.sh installs it)"
    wav = Path(tmp_path_factory.mktemp("speech")) / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello there, how are you?"], check=True)
    return load_audio(wav)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skimage.data.astronaut()[:384, 32:416].copy()  # the head and shoulders


@pytest.fixture(scope="module")
def avatars(photo: np.ndarray) -> dict[str, tuple[LipSyncEngine, PreparedAvatar]]:
    """Each engine with a 3-frame video avatar (small shifts of the photo)."""
    frames = np.stack(
        [np.roll(photo, (dy, dx), axis=(0, 1)) for dy, dx in [(0, 0), (2, 3), (4, -2)]]
    )
    out = {}
    for name in ENGINES:
        engine = LIPSYNC.create(name, fps=25.0, blink=False)
        out[name] = (engine, engine.prepare(frames, 25.0))
    return out


def chunks(x: np.ndarray, seed: int, max_len: int = 2500) -> Iterator[AudioChunk | SegmentEnd]:
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        n = int(rng.integers(1, max_len))
        yield AudioChunk(x[i : i + n])
        i += n
    yield SegmentEnd()


@pytest.mark.parametrize("name", ENGINES)
def test_frame_counts_for_many_lengths(name: str, avatars, speech: np.ndarray) -> None:
    engine, prepared = avatars[name]
    h, w = prepared.frames.shape[1:3]
    for n in [0, 1, 100, 319, 320, 321, 639, 640, 641, 1000, 6400, 16000, 16321]:
        x = np.resize(speech, n).astype(np.float32)
        frames = list(engine.generate(prepared, whole_audio(x)))
        assert len(frames) == frame_count(n, SR, 25.0), n
        for f in frames:
            assert isinstance(f, VideoFrame)
            assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
            assert f.fps == 25.0


@pytest.mark.parametrize("name", ENGINES)
def test_chunked_equals_whole(name: str, avatars, speech: np.ndarray) -> None:
    engine, prepared = avatars[name]
    whole = list(engine.generate(prepared, whole_audio(speech)))
    assert len(whole) == frame_count(len(speech), SR, 25.0)
    for seed in (1, 2):
        parts = list(engine.generate(prepared, chunks(speech, seed)))
        assert len(parts) == len(whole)
        for a, b in zip(whole, parts, strict=True):
            assert a.index == b.index and a.speaking == b.speaking
            assert np.array_equal(a.image, b.image)


@pytest.mark.parametrize("name", ENGINES)
def test_segments_each_get_their_own_frame_count(name: str, avatars, speech: np.ndarray) -> None:
    engine, prepared = avatars[name]
    a, b = speech[:7000], speech[7000:]
    stream = [AudioChunk(a), SegmentEnd(), AudioChunk(b[:1000]), AudioChunk(b[1000:])]
    frames = list(engine.generate(prepared, stream))  # no trailing SegmentEnd: flushed at end
    assert len(frames) == frame_count(len(a), SR, 25.0) + frame_count(len(b), SR, 25.0)
    assert [f.index for f in frames] == list(range(len(frames)))


@pytest.mark.parametrize("name", ENGINES)
def test_frames_come_out_within_the_declared_lookahead(
    name: str, avatars, speech: np.ndarray
) -> None:
    engine, prepared = avatars[name]
    fed = [0]

    def stream() -> Iterator[AudioChunk | SegmentEnd]:
        for i in range(0, len(speech), 160):
            fed[0] = min(len(speech), i + 160)
            yield AudioChunk(speech[i : i + 160])
        fed[0] = -1
        yield SegmentEnd()

    look = round(engine.capabilities.lookahead_s * SR)
    n_early = 0
    for f in engine.generate(prepared, stream()):
        if fed[0] < 0:
            break  # flushed by SegmentEnd
        end = frame_span(f.index, SR, 25.0)[1]
        # produced as soon as the audio up to the frame's end + lookahead arrived (one chunk late
        # at most), never needing more than that
        assert fed[0] <= max(end + look, round((f.index + 0.5) * SR / 25.0)) + 160
        n_early += 1
    assert n_early >= frame_count(len(speech), SR, 25.0) - 2


@pytest.mark.parametrize("name", ENGINES)
def test_start_frame_continues_the_pingpong_cycle(name: str, avatars) -> None:
    engine, prepared = avatars[name]
    silence = np.zeros(SR * 9 // 25, dtype=np.float32)  # 9 frames
    for start in (0, 3, 7):
        frames = list(engine.generate(prepared, whole_audio(silence), start_frame=start))
        assert [f.index for f in frames] == list(range(start, start + 9))
        for f in frames:
            k = pingpong(f.index, prepared.n_frames)
            src = prepared.frames[k]
            if name == "lite":  # silence is source frame k in the lite engine's closed-lips rest
                src = engine.render(prepared, k, 0.0, 0.0, 0.0)  # type: ignore[attr-defined]
            rows = slice(0, -8) if name == "fake" else slice(None)  # the fake's bar row
            assert np.array_equal(f.image[rows], src[rows]), (start, f.index)
            assert not f.speaking


def test_fake_bar_follows_the_audio_level(avatars) -> None:
    from digihuman.engines.lipsync.fake import bar_level

    engine, prepared = avatars["fake"]
    x = np.concatenate([np.zeros(3200), np.full(3200, 0.1), np.zeros(3200)]).astype(np.float32)
    levels = [bar_level(f.image) for f in engine.generate(prepared, whole_audio(x))]
    assert levels[:5] == [0.0] * 5
    assert all(abs(v - 0.4) < 0.01 for v in levels[5:10])
    assert levels[10:] == [0.0] * 5


def test_engines_satisfy_the_protocol(avatars) -> None:
    for name in ENGINES:
        engine, prepared = avatars[name]
        assert isinstance(engine, LipSyncEngine)
        assert prepared.engine == name
        assert engine.settings_fingerprint()["engine"] == name
        assert engine.capabilities.fps == 25.0 and not engine.capabilities.needs_weights
        for arr in prepared.arrays.values():
            assert arr.shape[0] == prepared.n_frames
