"""The lite engine on a real photo (skimage's astronaut, public domain, NASA) and real speech:
the mouth moves with speech and only there, silence is pixel-stable, a tilted head opens its
jaw along its own axis, blinks happen, a video avatar uses each frame's landmarks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from digihuman.engines.base import PreparedAvatar, whole_audio
from digihuman.engines.lipsync.lite import BlinkSchedule, LiteEngine
from digihuman.engines.lipsync.lite_warp import Frame2D
from digihuman.media.audio import load_audio

SR = 16000


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    assert shutil.which("espeak-ng"), "espeak-ng is needed (scripts/install.sh installs it)"
    wav = Path(tmp_path_factory.mktemp("speech")) / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello, how are you today?"], check=True)
    return load_audio(wav)


@pytest.fixture(scope="module")
def engine() -> LiteEngine:
    return LiteEngine(fps=25.0, blink=False)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def prepared(engine: LiteEngine, photo: np.ndarray) -> PreparedAvatar:
    return engine.prepare(photo[None], 25.0)


def face_frame(prepared: PreparedAvatar, k: int = 0) -> Frame2D:
    return Frame2D.from_landmarks(prepared.arrays["landmarks"][k])


def changed(a: np.ndarray, b: np.ndarray, thr: int = 12) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1) > thr


def test_prepare_stores_per_frame_arrays(prepared: PreparedAvatar, engine: LiteEngine) -> None:
    lm = prepared.arrays["landmarks"]
    assert lm.shape == (1, 468, 2) and lm.dtype == np.float32
    assert prepared.arrays["mouth_look"].shape == (1, 3, 3)
    assert prepared.meta["engine"] == "lite" and prepared.meta["version"]
    assert prepared.meta["face_index"] == engine.settings_fingerprint()["face_index"]
    f = face_frame(prepared)
    assert 35 < f.scale < 80  # the astronaut's inter-ocular distance in pixels
    assert 200 < f.origin[0] < 250 and 130 < f.origin[1] < 175  # her mouth


def test_silence_is_pixel_stable_and_speech_moves_only_the_mouth(
    engine: LiteEngine, prepared: PreparedAvatar, speech: np.ndarray
) -> None:
    src = prepared.frames[0]
    pad = np.zeros(SR // 2, dtype=np.float32)
    frames = [f.image for f in engine.generate(prepared, whole_audio(np.r_[pad, speech, pad]))]
    silent = frames[:10] + frames[-5:]
    # the astronaut smiles with her mouth open: silence is her closed-lips rest pose, held still
    rest = engine.render(prepared, 0, 0.0, 0.0, 0.0)
    assert not np.array_equal(rest, src)
    assert all(np.array_equal(img, rest) for img in silent)
    f = face_frame(prepared)
    moved = np.zeros(src.shape[:2], bool)
    n_open = 0
    for img in frames[12:-8]:
        c = changed(img, src)
        moved |= c
        n_open += c.sum() > 150
    assert n_open > 0.5 * len(frames[12:-8])  # the mouth is open during most of the speech
    ys, xs = np.nonzero(moved)
    a = f.to_aligned(np.stack([xs, ys], axis=-1))
    # every changed pixel lies around the mouth and jaw, none near the eyes or beyond the face
    assert np.all(np.abs(a[:, 0]) < 0.9) and np.all((a[:, 1] > -0.45) & (a[:, 1] < 1.2))
    # and the changes are centred on the mouth
    assert abs(np.median(a[:, 0])) < 0.1 and 0.0 < np.median(a[:, 1]) < 0.6


def test_mouth_interior_is_dark_but_not_black(engine: LiteEngine, prepared: PreparedAvatar) -> None:
    src = prepared.frames[0]
    out = engine.render(prepared, 0, 1.0, 0.0, 0.0)
    mouth = engine._rig(prepared, 0).mouth
    poly = mouth.inner_polygon(1.0, 0.0, mouth.close_for(1.0))
    top, bottom = poly[5], poly[16]  # the displaced inner-lip midpoints (landmarks 13 and 14)
    # the middle of the lower half of the open mouth: below the upper teeth (which the photo
    # shows and which ride with the upper lip), above the lower lip
    p = (top + 0.75 * (bottom - top)).round().astype(int)
    patch = out[p[1] - 2 : p[1] + 3, p[0] - 4 : p[0] + 5].reshape(-1, 3).astype(float)
    luma = patch @ [0.299, 0.587, 0.114]
    assert 8 < luma.mean() < 110  # a dark throat, not a flat black hole
    assert patch[:, 0].mean() > patch[:, 2].mean()  # reddish brown
    assert not np.array_equal(out, src)


def test_a_tilted_head_opens_along_its_own_axis(
    engine: LiteEngine, photo: np.ndarray, prepared: PreparedAvatar
) -> None:
    f0 = face_frame(prepared)
    angle = 25.0
    rot = cv2.getRotationMatrix2D((float(f0.origin[0]), float(f0.origin[1]) - 40), angle, 1.0)
    tilted = cv2.warpAffine(photo, rot, photo.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    p = engine.prepare(tilted[None], 25.0)
    f = face_frame(p)
    tilt = np.degrees(np.arctan2(f.ex[1], f.ex[0]))
    assert abs(tilt + angle) < 5  # the eye line follows the rotation (counter-clockwise)
    out = engine.render(p, 0, 1.0, 0.0, 0.0)
    ys, xs = np.nonzero(changed(out, p.frames[0]))
    assert len(xs) > 300
    a = f.to_aligned(np.stack([xs, ys], axis=-1))
    assert np.all(np.abs(a[:, 0]) < 0.9) and np.all((a[:, 1] > -0.45) & (a[:, 1] < 1.2))
    # the changed region is symmetric about the face's own vertical axis (not the image's)
    assert abs(np.median(a[:, 0])) < 0.08
    img_dx = np.median(xs) - f.origin[0]
    assert img_dx > 3  # which, in image coordinates, leans with the head


def test_blinks_are_natural_and_deterministic(prepared: PreparedAvatar) -> None:
    sched = BlinkSchedule(25.0, seed=0)
    closure = np.array([sched.closure(i) for i in range(25 * 20)])
    on = closure > 0
    starts = np.flatnonzero(on[1:] & ~on[:-1]) + 1
    assert closure[0] == 0.0 and starts[0] >= 2 * 25
    gaps = np.diff(starts) / 25.0
    assert len(starts) >= 3 and np.all((gaps > 1.9) & (gaps < 6.4))
    lengths = [int(on[s : s + 12].sum()) for s in starts]
    assert all(3 <= n <= 6 for n in lengths)  # ~150-250 ms
    assert closure.max() == 1.0
    again = BlinkSchedule(25.0, seed=0)
    assert [again.closure(i) for i in range(500)] == closure.tolist()

    # blinks run while someone speaks (a voiced sound held through the first blink) ...
    n = starts[0] + 6
    t = np.arange(int(SR * n / 25)) / SR
    voiced = 0.2 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    voiced = voiced.astype(np.float32)
    engine = LiteEngine(fps=25.0, blink=True, seed=0)
    frames = [f.image for f in engine.generate(prepared, whole_audio(voiced))]
    still = [
        f.image for f in LiteEngine(fps=25.0, blink=False).generate(prepared, whole_audio(voiced))
    ]
    assert all(np.array_equal(a, b) for a, b in zip(frames[: starts[0]], still, strict=False))
    peak = int(np.argmax(closure[: len(frames)]))
    full, src = frames[peak], still[peak]
    ys, xs = np.nonzero(changed(full, src))
    a = face_frame(prepared).to_aligned(np.stack([xs, ys], axis=-1))
    assert len(xs) > 40
    assert np.all(a[:, 1] < -0.7)  # only the eyes (well above the mouth) changed
    assert np.any(a[:, 0] < -0.3) and np.any(a[:, 0] > 0.3)  # both eyes
    # ... and never in silence: the whole stretch is the one rest frame, no blink, no jitter
    silent = [f.image for f in engine.generate(prepared, whole_audio(np.zeros_like(voiced)))]
    rest = engine.render(prepared, 0, 0.0, 0.0, 0.0)
    assert len(silent) == n and all(np.array_equal(img, rest) for img in silent)


def test_a_video_avatar_uses_each_frames_landmarks(photo: np.ndarray) -> None:
    shifts = [(0, 0), (0, 8), (7, 8), (7, 0)]
    frames = np.stack([np.roll(photo, s, axis=(0, 1)) for s in shifts])
    engine = LiteEngine(fps=25.0, blink=False)
    p = engine.prepare(frames, 25.0)
    lm = p.arrays["landmarks"]
    offsets = []
    for k, (dy, dx) in enumerate(shifts):
        d = (lm[k] - lm[0]).mean(axis=0)
        if k:  # the tracker follows the head (it may smooth, but it moves the right way)
            assert d @ np.array([dx, dy]) > 0.4 * (dx * dx + dy * dy), (k, d)
        ys, xs = np.nonzero(changed(engine.render(p, k, 1.0, 0.0, 0.0), frames[k]))
        mouth = face_frame(p, k).origin
        offsets.append((np.median(xs) - mouth[0], np.median(ys) - mouth[1]))
    # each frame's change sits at the same place relative to that frame's own landmarks
    o = np.array(offsets)
    assert np.abs(o - o[0]).max() < 1.5, o


def test_generate_is_deterministic(engine: LiteEngine, prepared: PreparedAvatar, speech) -> None:
    a = [f.image for f in LiteEngine(blink=True).generate(prepared, whole_audio(speech))]
    b = [f.image for f in LiteEngine(blink=True).generate(prepared, whole_audio(speech))]
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_photo_without_visible_teeth_gets_a_synthetic_interior(
    engine: LiteEngine, prepared: PreparedAvatar
) -> None:
    # Tell the engine the photo's mouth is closed (inner lips together, no bright teeth seen):
    # the gap is then filled with a dark red-brown throat and a faint upper-teeth band.
    lm = prepared.arrays["landmarks"].copy()
    from digihuman.engines.lipsync.lite_warp import LOWER_INNER, UPPER_INNER

    lm[0, list(LOWER_INNER)] = lm[0, list(UPPER_INNER)]
    look = prepared.arrays["mouth_look"].copy()
    look[0, 1] = (215.0, 205.0, 190.0)
    look[0, 2, :2] = (0.45, 0.05)
    closed = PreparedAvatar(
        engine="lite",
        fps=25.0,
        frames=prepared.frames,
        arrays={"landmarks": lm, "mouth_look": look},
        meta=prepared.meta,
    )
    out = engine.render(closed, 0, 1.0, 0.0, 0.0).astype(float)
    f = face_frame(closed)
    top = f.to_image(np.array([[0.0, -0.02]])).round().astype(int)[0]  # just under the lip
    mid = f.to_image(np.array([[0.0, 0.08]])).round().astype(int)[0]  # the depth of the mouth
    luma = out @ [0.299, 0.587, 0.114]
    assert 10 < luma[mid[1], mid[0]] < 90 and out[mid[1], mid[0], 0] > out[mid[1], mid[0], 2]
    assert luma[top[1], top[0]] > luma[mid[1], mid[0]] + 15  # the teeth band is lighter


def test_prepare_without_a_face_says_so(engine: LiteEngine) -> None:
    from digihuman.errors import InputError

    blank = np.full((1, 256, 256, 3), 128, np.uint8)
    with pytest.raises(InputError):
        engine.prepare(blank, 25.0)


def test_other_frame_rates_keep_the_contract(prepared: PreparedAvatar, speech) -> None:
    from digihuman.timing import frame_count

    for fps in (30.0, 24.0):
        e = LiteEngine(fps=fps, blink=True)
        assert e.capabilities.fps == fps and e.capabilities.lookahead_s >= 0
        frames = list(e.generate(prepared, whole_audio(speech)))
        assert len(frames) == frame_count(len(speech), SR, fps)
        assert all(fr.fps == fps for fr in frames)
