"""End-to-end renders through the real CLI: a real photo, a real video avatar, real speech.

The output is checked from outside: streams and codecs, duration against the audio, frame
count, and that the mouth region moves with the speech and stays still in silence.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digihuman.timing import frame_count

FPS = 25.0


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "digihuman", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def _mouth_box(image: np.ndarray) -> tuple[int, int, int, int]:
    from digihuman.face import FaceAnalyzer
    from digihuman.face.geometry import LIPS_OUTER

    lm = FaceAnalyzer().analyze(image)
    pts = lm.points[list(LIPS_OUTER)]
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    h = y1 - y0
    return int(x0), int(y0 - 0.3 * h), int(x1), int(y1 + 1.2 * h)


def _frame_rms(audio: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    for i in range(n):
        a, b = int(i * 16000 / FPS), int((i + 1) * 16000 / FPS)
        seg = audio[a:b]
        out[i] = np.sqrt(np.mean(seg**2)) if len(seg) else 0.0
    return out


@pytest.fixture(scope="module")
def padded_speech(
    speech_16k: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, np.ndarray]:
    """1 s silence + 4 s of real speech + 1 s silence, as a stereo 44.1 kHz m4a-free wav."""
    from digihuman.media.audio import save_wav

    silence = np.zeros(16000, np.float32)
    audio = np.concatenate([silence, speech_16k[: 4 * 16000], silence])
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    save_wav(path, audio, 16000)
    return path, audio


def test_photo_render(portrait_rgb: np.ndarray, padded_speech, tmp_path: Path) -> None:
    from digihuman.media.video import probe, read_video

    wav, audio = padded_speech
    photo = tmp_path / "astronaut.jpg"
    from PIL import Image

    Image.fromarray(portrait_rgb).save(photo, quality=95)
    out = tmp_path / "out" / "render.mp4"
    r = cli("render", "--avatar", str(photo), "--audio", str(wav), "-o", str(out), "-q",
            env={"DIGIHUMAN_DATA_DIR": str(tmp_path / "root")})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out)
    info = probe(out)
    assert info.has_video and info.has_audio
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    expected = frame_count(len(audio), 16000, FPS)
    assert info.n_frames == expected
    assert abs(info.duration - len(audio) / 16000) <= 1.5 / FPS
    assert (info.width, info.height) == (512, 512)

    frames, fps = read_video(out)
    assert fps == pytest.approx(FPS)
    x0, y0, x1, y1 = _mouth_box(portrait_rgb)
    # silence shows the lite engine's rest pose: the astronaut smiles with her mouth open, and
    # the engine closes it at rest so that speech can open and close it (docs/architecture.md)
    from digihuman.engines.lipsync.lite import LiteEngine

    lite = LiteEngine(blink=False)
    rest = lite.render(lite.prepare(portrait_rgb[None], FPS), 0, 0.0, 0.0, 0.0)
    src = rest[y0:y1, x0:x1].astype(np.float32)
    change = np.array([np.abs(f[y0:y1, x0:x1].astype(np.float32) - src).mean() for f in frames])
    rms = _frame_rms(audio, len(frames))
    silent = rms < 1e-4
    speaking = rms > np.percentile(rms[~silent], 50)
    # deep silence: at least 6 frames (240 ms) away from any sound, so anticipation and
    # release of the mouth are allowed around speech
    near_sound = np.convolve((~silent).astype(float), np.ones(13), mode="same") > 0
    deep = silent & ~near_sound
    assert deep.sum() >= 30
    # still in silence: the mouth is the rest pose (encoder noise only) and does not move
    assert change[deep].max() < 4.0, change[deep]
    mouth = frames[:, y0:y1, x0:x1].astype(np.float32)
    steps = np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2, 3))
    assert steps[deep[1:] & deep[:-1]].max() < 1.0
    assert change[speaking].mean() > 3 * max(change[silent].mean(), 0.5)
    assert np.corrcoef(change, rms)[0, 1] > 0.4
    # far from the mouth nothing changes but blinks: the top-left corner is the photo
    corner = np.abs(frames[:, :100, :100].astype(np.float32) - portrait_rgb[:100, :100]).mean()
    assert corner < 3.0


def test_video_avatar_and_save_frames(
    portrait_rgb: np.ndarray, padded_speech, tmp_path: Path
) -> None:
    import cv2

    from digihuman.media.video import VideoWriter, probe

    wav, audio = padded_speech
    # a 1.2 s video avatar: the head sways and tilts a little
    vid = tmp_path / "sway.mp4"
    with VideoWriter(vid, 25.0) as w:
        for i in range(30):
            angle = 4.0 * np.sin(i / 5.0)
            m = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
            m[0, 2] += 6 * np.sin(i / 7.0)
            w.write(cv2.warpAffine(portrait_rgb, m, (512, 512), borderMode=cv2.BORDER_REFLECT))
    root = tmp_path / "root"
    r = cli("render", "--avatar", str(vid), "--audio", str(wav), "--save-frames", "-q",
            env={"DIGIHUMAN_DATA_DIR": str(root)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = root / "results" / "output" / "sway_speech.mp4"
    assert r.stdout.strip().splitlines()[-1] == str(out)
    n = frame_count(len(audio), 16000, FPS)
    info = probe(out)
    assert info.n_frames == n
    pngs = sorted((root / "results" / "output" / "sway_speech").glob("*.png"))
    assert len(pngs) == n and pngs[0].name == "00000000.png"
    # no temp files left next to the results
    leftovers = [p.name for p in (root / "results" / "output").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_avatar_cache_and_stale_detection(
    portrait_rgb: np.ndarray, padded_speech, tmp_path: Path
) -> None:
    from PIL import Image

    wav, _ = padded_speech
    root = tmp_path / "root"
    env = {"DIGIHUMAN_DATA_DIR": str(root)}
    photo = tmp_path / "face.png"
    Image.fromarray(portrait_rgb).save(photo)
    r = cli("avatar", "prepare", "--id", "alice", "--source", str(photo), "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert (root / "results" / "avatars" / "alice" / "manifest.json").is_file()
    r = cli("render", "--avatar-id", "alice", "--audio", str(wav), "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert "stale" not in r.stderr
    assert (root / "results" / "output" / "alice_speech.mp4").is_file()
    # change the source: the cache is detected as stale and rebuilt, loudly
    Image.fromarray(np.ascontiguousarray(portrait_rgb[:, ::-1])).save(photo)
    r = cli("render", "--avatar-id", "alice", "--audio", str(wav), "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert "stale" in r.stderr and "source" in r.stderr
    # change a setting that shapes preparation: stale again
    r = cli("render", "--avatar-id", "alice", "--audio", str(wav), "-q", "--face-index", "0",
            env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "stale" in r.stderr and "face_index" in r.stderr
    # the source is gone and the cache is stale: a clear refusal
    photo.unlink()
    r = cli("render", "--avatar-id", "alice", "--audio", str(wav), "-q", env=env)
    assert r.returncode == 2
    assert "avatar prepare" in r.stderr and "Traceback" not in r.stderr


def _one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0].lower(), lines[0]


def test_clear_errors(portrait_rgb: np.ndarray, padded_speech, tmp_path: Path) -> None:
    from PIL import Image

    wav, _ = padded_speech
    out_dir = tmp_path / "out"
    env = {"DIGIHUMAN_DATA_DIR": str(tmp_path / "root")}
    photo = tmp_path / "face.jpg"
    Image.fromarray(portrait_rgb).save(photo)
    wall = tmp_path / "wall.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))).convert(
        "RGB"
    ).save(wall)
    garbage = tmp_path / "broken.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    empty = tmp_path / "empty.wav"
    from digihuman.media.audio import save_wav

    save_wav(empty, np.zeros(0, np.float32), 16000)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")

    cases = [
        (["--avatar", str(wall), "--audio", str(wav)], ("no face",)),
        (["--avatar", str(photo), "--audio", str(garbage)], ("broken.wav",)),
        (["--avatar", str(photo), "--audio", str(empty)], ("empty.wav",)),
        (["--avatar", str(photo), "--audio", str(tmp_path / "nope.wav")], ("nope.wav",)),
        (["--avatar", str(tmp_path / "nope.jpg"), "--audio", str(wav)], ("nope.jpg",)),
        (["--avatar", str(notes), "--audio", str(wav)], (".txt", "unsupported")),
        (["--avatar", str(photo), "--audio", str(notes)], ("notes.txt",)),
        (["--avatar", str(photo)], ("--audio",)),
        (["--avatar-id", "ghost", "--audio", str(wav)], ("ghost",)),
    ]
    for args, needles in cases:
        out = out_dir / "x.mp4"
        r = cli("render", *args, "-o", str(out), "-q", env=env)
        _one_line_error(r, *needles)
        assert not out.exists()
        if out_dir.exists():
            assert list(out_dir.iterdir()) == [], args


def test_render_text_streams_tts_into_the_engine(tmp_path: Path) -> None:
    """`render --text`: offline TTS chunks feed the lip-sync engine; audio muxed at the end."""
    from digihuman.media.audio import load_audio
    from digihuman.media.video import probe

    out = tmp_path / "t.mp4"
    photo = Path(__file__).resolve().parents[2] / "src" / "digihuman" / "assets" / "portrait.jpg"
    r = cli("render", "--avatar", str(photo), "--text", "Hello, nice to meet you. Let us begin.",
            "-o", str(out), "-q", env={"DIGIHUMAN_DATA_DIR": str(tmp_path / "root")})  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert info.has_audio and info.has_video
    audio = load_audio(out)
    assert 1.5 < len(audio) / 16000 < 8.0
    assert abs(info.n_frames - frame_count(len(audio), 16000, FPS)) <= 1
    assert abs(info.duration - len(audio) / 16000) <= 2 / FPS
