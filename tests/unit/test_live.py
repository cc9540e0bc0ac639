"""The live session core: pacing, idle, speech in order, interrupt, clips, a late engine."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

import numpy as np
import pytest
import skimage.data

from digihuman.engines.base import AudioStream, PreparedAvatar
from digihuman.engines.lipsync.fake import FakeLipSync, bar_level
from digihuman.engines.lipsync.lite import LiteEngine
from digihuman.media.audio import load_audio
from digihuman.pipeline.live import LiveSession, fit_to_frames, split_at_silences
from digihuman.timing import frame_count, pingpong
from digihuman.types import VideoFrame

SR = 16000


def tone(seconds: float, amp: float = 0.3, f: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.fixture(scope="module")
def fake() -> FakeLipSync:
    return FakeLipSync()


@pytest.fixture(scope="module")
def still(fake: FakeLipSync) -> PreparedAvatar:
    img = np.full((64, 48, 3), 90, np.uint8)
    return fake.prepare(img[None], 25.0)


@pytest.fixture(scope="module")
def video(fake: FakeLipSync) -> PreparedAvatar:
    frames = np.stack([np.full((32, 32, 3), 10 * k, np.uint8) for k in range(5)])
    return fake.prepare(frames, 25.0)


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.ticks: list[tuple[float, int, np.ndarray, np.ndarray]] = []

    def write(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        self.ticks.append((time.monotonic(), index, image, np.array(audio)))

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "ok": True}

    def close(self) -> None:
        pass


def run(s: LiveSession, n: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    return [s.step() for _ in range(n)]


def test_split_at_silences_cuts_in_pauses_and_bounds_length() -> None:
    x = np.concatenate([tone(3.0), np.zeros(SR // 4, np.float32), tone(3.0), tone(4.0)])
    segs = split_at_silences(x, max_s=5.0, min_s=1.0)
    assert sum(len(s) for s in segs) == len(x)
    assert all(len(s) <= 5 * SR for s in segs)
    assert abs(len(segs[0]) - (3 * SR + SR // 8)) < SR // 8  # inside the pause
    fitted = fit_to_frames(x[: SR + 100], 25.0)
    assert len(fitted) == frame_count(SR + 100, SR, 25.0) * 640


def test_idle_is_the_still_source_and_silent(fake: FakeLipSync, still: PreparedAvatar) -> None:
    s = LiveSession(fake, still, strict=True)
    out = run(s, 30)
    assert all(np.array_equal(img, still.frames[0]) for img, _, _ in out)
    assert all(len(a) == 640 and not a.any() and not sp for _, a, sp in out)
    assert s.status()["state"] == "idle"


def test_speech_plays_in_order_with_its_audio_then_idles(
    fake: FakeLipSync, still: PreparedAvatar
) -> None:
    s = LiveSession(fake, still, strict=True)
    run(s, 3)
    a, b = tone(0.48, 0.1), tone(0.8, 0.2)
    id_a, sec_a = s.say(a)
    id_b, sec_b = s.say(b)
    assert sec_a == pytest.approx(0.48) and sec_b == pytest.approx(1.28)  # duration + queue ahead
    st = s.status()
    assert [q["id"] for q in st["queued"]] == [id_a, id_b] and st["seconds_ahead"] == 1.28
    out = run(s, 12 + 20 + 10)
    levels = [bar_level(img) for img, _, _ in out]
    audio = np.concatenate([x for _, x, _ in out])
    # the stream's audio is exactly a, then b, then silence; the bar follows it frame by frame
    assert np.array_equal(audio[: len(a)], a)
    assert np.array_equal(audio[len(a) : len(a) + len(b)], b)
    assert not audio[len(a) + len(b) :].any()
    assert all(lv == pytest.approx(min(1, 4 * 0.1 / 2**0.5), abs=0.05) for lv in levels[1:11])
    assert all(lv == pytest.approx(min(1, 4 * 0.2 / 2**0.5), abs=0.05) for lv in levels[13:31])
    assert all(lv == 0 for lv in levels[33:])
    assert [e["event"] for e in s.events] == ["started", "finished", "started", "finished"]
    assert s.status()["state"] == "idle" and s.repeats == 0


def test_interrupt_cuts_at_once_and_clears_the_queue(
    fake: FakeLipSync, still: PreparedAvatar
) -> None:
    s = LiveSession(fake, still, strict=True)
    s.say(tone(5.0))
    s.say(tone(5.0))
    run(s, 10)
    assert s.status()["state"] == "speaking"
    assert s.interrupt() == 2
    st = s.status()
    assert st["state"] == "idle" and st["queued"] == [] and st["seconds_ahead"] == 0
    out = run(s, 5)
    assert all(not a.any() and bar_level(img) == 0 for img, a, _ in out)
    _, secs = s.say(tone(0.4))
    assert secs == pytest.approx(0.4)  # the cut utterances no longer count


def test_video_avatar_loops_forward_backward_across_speech(
    fake: FakeLipSync, video: PreparedAvatar
) -> None:
    s = LiveSession(fake, video, strict=True)
    run(s, 3)
    s.say(tone(0.4, 0.0001))  # near-silent speech: the bar stays empty, the source shows
    out = run(s, 20)
    for t, (img, _, _) in enumerate(out, start=3):
        assert img[0, 0, 0] == 10 * pingpong(t, 5), t  # one continuous cycle, no jump


def test_clip_waits_for_cycle_start_and_idle_resumes_after_it(
    fake: FakeLipSync, video: PreparedAvatar
) -> None:
    s = LiveSession(fake, video, strict=True)
    run(s, 3)  # cycle at 3: the clip waits until 8 (period 2 * 5 - 2)
    clip = np.stack([video.frames[pingpong(j, 5)] + 1 for j in range(6)])
    _, secs = s.play(clip, tone(6 / 25))
    assert secs == pytest.approx(6 / 25)
    out = run(s, 12)
    marks = [int(img[0, 0, 0]) for img, _, _ in out]
    assert marks[:5] == [10 * pingpong(t, 5) for t in range(3, 8)]  # idle until cycle 8
    assert marks[5:11] == [10 * pingpong(j, 5) + 1 for j in range(6)]  # the clip
    assert marks[11] == 10 * pingpong(14, 5)  # idle continues from the clip's end


class SlowEngine:
    """The fake engine, 1.5x slower than real time (60 ms per frame)."""

    def __init__(self, inner: FakeLipSync) -> None:
        self.inner = inner
        self.name, self.capabilities = "slow", inner.capabilities

    def generate(
        self, prepared: PreparedAvatar, audio: AudioStream, *, start_frame: int = 0
    ) -> Iterator[VideoFrame]:
        for f in self.inner.generate(prepared, audio, start_frame=start_frame):
            time.sleep(0.06)
            yield f


def test_a_late_engine_keeps_25_fps_and_continuous_audio(
    fake: FakeLipSync, still: PreparedAvatar
) -> None:
    sink = Collect()
    s = LiveSession(SlowEngine(fake), still, sinks=[sink])  # type: ignore[arg-type]
    s.start()
    try:
        s.say(tone(1.0, 0.2))
        deadline = time.monotonic() + 20
        while len(sink.ticks) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        s.stop()
    ticks = sink.ticks[:50]
    assert len(ticks) == 50
    assert [t[1] for t in ticks] == list(range(50))  # every tick, in order
    rate = 49 / (ticks[-1][0] - ticks[0][0])
    assert 20 < rate < 30  # paced near 25 fps though the engine makes ~16 frames/s
    audio = np.concatenate([t[3] for t in ticks])
    t0 = s.events[0]["tick"] * 640  # where the utterance started
    assert not audio[:t0].any() and np.array_equal(audio[t0 : t0 + SR], tone(1.0, 0.2))
    assert not audio[t0 + SR :].any()
    assert s.repeats + s.late > 10  # frames repeated or late, not waited for
    levels = [bar_level(t[2]) for t in ticks]
    assert max(levels) > 0.4  # the frames that were ready were shown


@pytest.fixture(scope="module")
def lite() -> LiteEngine:
    return LiteEngine(fps=25.0)


@pytest.fixture(scope="module")
def astronaut(lite: LiteEngine) -> PreparedAvatar:
    return lite.prepare(skimage.data.astronaut()[None], 25.0)


def test_lite_idle_is_the_rest_pose_and_speech_joins_it_without_a_jump(
    lite: LiteEngine, astronaut: PreparedAvatar
) -> None:
    speech = load_audio(resources.files("digihuman.assets") / "speech_en.wav")[: 3 * SR]
    pad = np.zeros(SR // 2, np.float32)
    s = LiveSession(lite, astronaut, strict=True)
    rest = lite.render(astronaut, 0, 0.0, 0.0, 0.0)
    idle = run(s, 10)
    assert all(np.array_equal(img, rest) for img, _, _ in idle)  # blinks start after 2 s
    s.say(np.concatenate([pad, speech, pad]))
    n = frame_count(len(speech) + 2 * len(pad), SR, 25.0)
    out = run(s, n + 10)
    imgs = [img for img, _, _ in out]
    assert np.array_equal(imgs[0], rest)  # the utterance starts at the rest pose
    moving = [not np.array_equal(a, b) for a, b in itertools.pairwise(imgs[15 : n - 14])]
    assert sum(moving) > 0.5 * len(moving)  # the mouth moves while speaking
    blinks = s._blinks.closure
    idle_after = [lite.render(astronaut, 0, 0, 0, blinks(t)) for t in range(10 + n, 20 + n)]
    assert all(
        np.array_equal(a, b) for a, b in zip(imgs[n:], idle_after, strict=True)
    )  # back to the idle loop
    assert np.array_equal(imgs[n - 1], rest) or s._blinks.closure(10 + n - 1) > 0


def test_the_next_utterance_is_started_ahead_so_its_frames_are_ready(
    fake: FakeLipSync, still: PreparedAvatar
) -> None:
    """Real pacing: the engine of an utterance starts before its first tick (from idle: the
    next tick; behind another: when that one's end is near), so no frame is repeated at the
    starts and the picture follows the audio tick by tick."""
    sink = Collect()
    s = LiveSession(fake, still, sinks=[sink])
    s.start()
    try:
        time.sleep(0.2)
        s.say(tone(0.8, 0.1))
        s.say(tone(0.8, 0.2))
        deadline = time.monotonic() + 20
        while len(s.events) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        s.stop()
    starts = [e["tick"] for e in s.events if e["event"] == "started"]
    assert len(starts) == 2 and starts[1] == starts[0] + 20  # back to back
    assert s.repeats <= 2  # (0 unless the machine stalls a thread for a whole tick)
    by_tick = {index: (img, audio) for _, index, img, audio in sink.ticks}
    ok = 0
    for t in range(starts[0], starts[0] + 40):
        img, audio = by_tick[t]
        rms = float(np.sqrt(np.mean(audio**2)))
        ok += abs(bar_level(img) - min(1, 4 * rms)) < 0.05
    assert ok >= 38  # frame and audio of the same tick match


# --------------------------------------------------------------------------------------------
# sinks: one encoder, several containers
# --------------------------------------------------------------------------------------------


def _slices(data: bytes, annexb: bool) -> list[bytes]:
    """The coded slices (NAL types 1 and 5) of an H.264 packet, without their framing."""
    nals: list[bytes] = []
    if annexb:
        for part in data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
            if part:
                nals.append(part.rstrip(b"\x00") if part[0] & 0x1F in (1, 5) else part)
    else:
        i = 0
        while i + 4 <= len(data):
            n = int.from_bytes(data[i : i + 4], "big")
            nals.append(data[i + 4 : i + 4 + n])
            i += 4 + n
    return [x for x in nals if x and x[0] & 0x1F in (1, 5)]


def _video_packets(path: Any, annexb: bool = False) -> list[tuple[bool, list[bytes]]]:
    import av

    with av.open(str(path)) as c:
        return [(p.is_keyframe, _slices(bytes(p), annexb)) for p in c.demux(video=0) if p.size]


def _feed(enc: Any, n: int, before: Any = None) -> None:
    rng = np.random.default_rng(1)
    for i in range(n):
        if before is not None:
            before(i)
        img = np.full((64, 48, 3), (3 * i) % 255, np.uint8)
        img[:16, :16] = rng.integers(0, 255, (16, 16, 3))
        enc.write(img, (0.1 * np.sin(np.arange(640) / 7 + i)).astype(np.float32), i)
        time.sleep(0.004)  # (the encoder's queue would drop ticks fed all at once)


def test_one_encoder_feeds_the_recording_hls_and_flv_with_the_same_stream(tmp_path: Any) -> None:
    """The recording (fragmented MP4), HLS (MPEG-TS) and the push (FLV, here to a file) carry the
    very same coded slices: the room encodes once; every container starts on a keyframe."""
    import av

    from digihuman.streaming.sinks import FileSink, HlsSink, LiveEncoder, RtmpSink

    rec, hls = FileSink(tmp_path / "r.mp4"), HlsSink(tmp_path / "hls")
    push = RtmpSink(str(tmp_path / "push.flv"))
    enc = LiveEncoder([rec, hls, push], fps=25.0)
    _feed(enc, 60)
    enc.close()
    assert enc.frames == 60 and enc.dropped == 0
    assert [o.frames for o in (rec, hls, push)] == [60, 60, 60]
    mp4, flv = _video_packets(tmp_path / "r.mp4"), _video_packets(tmp_path / "push.flv")
    segs = sorted((tmp_path / "hls").glob("seg*.ts"))
    ts = [p for s in segs for p in _video_packets(s, annexb=True)]
    assert len(segs) >= 2 and all(_video_packets(s, annexb=True)[0][0] for s in segs)  # 1 s GOPs
    assert mp4[0][0] and flv[0][0] and len(mp4) == len(flv) == 60
    assert [s for _, s in mp4] == [s for _, s in flv]
    assert [s for _, s in ts] == [s for _, s in mp4][-len(ts) :]  # (older segments deleted)
    with av.open(str(tmp_path / "r.mp4")) as c:  # the recording has its audio too
        assert sum(f.samples for f in c.decode(audio=0)) >= 60 * 640 - 1024


def test_a_reconnected_push_starts_on_a_keyframe_with_a_fresh_timeline(tmp_path: Any) -> None:
    """The push fails to open (its folder is missing), retries with backoff and, once it
    can, starts at the encoder's next keyframe as time 0; the other output never noticed."""
    import av

    from digihuman.streaming.sinks import FileSink, LiveEncoder, RtmpSink

    target = tmp_path / "later" / "push.flv"
    push, rec = RtmpSink(str(target), backoff_s=(0.05, 0.05)), FileSink(tmp_path / "r.mp4")
    enc = LiveEncoder([push, rec], fps=25.0)
    _feed(enc, 80, before=lambda i: i == 5 and (tmp_path / "later").mkdir())
    enc.close()
    assert push.errors >= 1 and push.connects == 1 and rec.errors == 0 and rec.frames == 80
    pk = _video_packets(target)
    assert pk[0][0] and len(pk) in (55, 30)  # from the keyframe at tick 25 (or 50)
    with av.open(str(target)) as c:
        vt = [f.time for f in c.decode(video=0)]
    with av.open(str(target)) as c:
        at = [f.time for f in c.decode(audio=0)]
    assert vt[0] <= 0.1 and at[0] <= 0.1 and np.allclose(np.diff(vt), 0.04, atol=1e-3)
    assert abs((vt[-1] + 0.04) - (at[-1] + 1024 / SR)) <= 0.04 + 1024 / SR  # in step
