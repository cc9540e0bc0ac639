"""Media I/O against the real ffmpeg executable: formats it writes are read back right,
and what digihuman writes reads right in ffmpeg."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from digihuman.errors import InputError
from digihuman.media.audio import load_audio, save_wav
from digihuman.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from digihuman.media.video import probe, read_video, write_video

SR = 16000


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def ffmpeg_pcm(path: Path) -> np.ndarray:
    """Decode ``path``'s audio with the ffmpeg CLI to 16 kHz mono float32."""
    raw = run_ffmpeg(["-i", str(path), "-vn", "-ac", "1", "-ar", str(SR), "-f", "f32le", "-"])
    return np.frombuffer(raw, np.float32)


def test_ffmpeg_exe_runs() -> None:
    exe = ffmpeg_exe()
    assert os.access(exe, os.X_OK)
    assert b"ffmpeg version" in run_ffmpeg(["-version"])


def test_run_ffmpeg_error_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        run_ffmpeg(["-i", str(tmp_path / "missing.wav"), "-f", "null", "-"])
    msg = str(err.value)
    assert msg.startswith("ffmpeg failed:") and "\n" not in msg


def test_run_ffmpeg_stdin_input() -> None:
    pcm = (tone(0.1, 8000) * 32767).astype("<i2").tobytes()
    out = run_ffmpeg(
        ["-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "pipe:0", "-f", "s16le", "-"],
        input=pcm,
    )
    assert out == pcm


@pytest.mark.parametrize(
    ("ext", "codec_args"),
    [
        ("mp3", ["-c:a", "libmp3lame"]),
        ("m4a", ["-c:a", "aac"]),
        ("ogg", ["-c:a", "libvorbis"]),
        ("opus", ["-c:a", "libopus"]),
        ("flac", ["-c:a", "flac"]),
    ],
)
@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (22050, 1)])
def test_every_audio_format_decodes_to_16k_mono(
    tmp_path: Path, ext: str, codec_args: list[str], rate: int, channels: int
) -> None:
    src = tmp_path / "src.wav"
    x = tone(1.5, rate)
    save_wav(src, x, rate)
    out = tmp_path / f"a.{ext}"
    run_ffmpeg(["-i", str(src), *codec_args, "-ac", str(channels), str(out)])
    y = load_audio(out)
    assert y.dtype == np.float32 and y.ndim == 1
    # right length: within one 40 ms video frame of the source (encoder delay removed)
    assert abs(len(y) - 1.5 * SR) <= 0.04 * SR, len(y)
    # right content, not shifted
    ref = tone(1.5, SR)
    m = min(len(y), len(ref)) - 800
    assert np.corrcoef(y[800:m], ref[800:m])[0, 1] > 0.95


def test_audio_track_of_a_video(tmp_path: Path) -> None:
    src = tmp_path / "src.wav"
    save_wav(src, tone(2.0, 48000), 48000)
    vid = tmp_path / "v.mp4"
    run_ffmpeg(
        [
            *("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30:duration=2", "-i", str(src)),
            *("-c:v", "libx264", "-c:a", "aac", "-ac", "2", "-shortest", str(vid)),
        ]
    )
    y = load_audio(vid)
    assert abs(len(y) - 2 * SR) <= 0.04 * SR
    frames, fps = read_video(vid)
    assert fps == 30.0 and frames.shape == (60, 48, 64, 3)


def test_video_without_audio_is_an_input_error(tmp_path: Path) -> None:
    vid = tmp_path / "silent.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=32x32:rate=25:duration=0.2", str(vid)])
    with pytest.raises(InputError, match=r"silent\.mp4 has no audio track"):
        load_audio(vid)


@pytest.mark.parametrize("degrees", ["90", "-90", "180"])
def test_rotated_video_matches_ffmpeg_autorotate(tmp_path: Path, degrees: str) -> None:
    plain = tmp_path / "p.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.2", str(plain)])
    rot = tmp_path / "r.mp4"
    run_ffmpeg(["-display_rotation", degrees, "-i", str(plain), "-c", "copy", str(rot)])
    ours = read_video(rot)[0][0]
    raw = run_ffmpeg(["-i", str(rot), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    theirs = np.frombuffer(raw, np.uint8).reshape(ours.shape)
    assert ours.shape == ((64, 48, 3) if degrees != "180" else (48, 64, 3))
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seconds", [0.52, 1.0, 3.33])
def test_written_mp4_reads_right_in_ffmpeg(tmp_path: Path, seconds: float) -> None:
    n = round(seconds * 25)
    audio = tone(seconds, SR, freq=300.0)
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    frames[:, :, :, 1] = np.linspace(0, 255, n, dtype=np.uint8)[:, None, None]
    out = tmp_path / "o.mp4"
    write_video(out, frames, 25, audio=audio)
    # the ffmpeg CLI (independent of our reader) sees the same audio length and content
    y = ffmpeg_pcm(out)
    assert abs(len(y) - len(audio)) <= 0.04 * SR, (len(y), len(audio))
    m = min(len(y), len(audio))
    assert np.corrcoef(y[:m], audio[:m])[0, 1] > 0.95
    # and exactly the frames written
    raw = run_ffmpeg(["-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    assert len(raw) == n * 48 * 64 * 3
    info = probe(out)
    assert info.n_frames == n and info.video_duration == pytest.approx(n / 25, abs=1e-6)
    assert info.audio_duration == pytest.approx(seconds, abs=0.04)


def test_written_colours_survive_in_ffmpeg_and_are_tagged(tmp_path: Path) -> None:
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [220, 180, 150]], np.uint8)
    frame = np.repeat(np.repeat(colours[None], 720, axis=0), 320, axis=1)  # 720 x 1280
    out = tmp_path / "c.mp4"
    write_video(out, [frame] * 2, 25)
    raw = run_ffmpeg(["-i", str(out), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    theirs = np.frombuffer(raw, np.uint8).reshape(720, 1280, 3)
    ours = read_video(out)[0][0]
    for i, c in enumerate(colours):
        x = i * 320 + 160
        assert np.abs(theirs[360, x].astype(int) - c).max() <= 6
        assert np.abs(ours[360, x].astype(int) - c).max() <= 6
    info = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True
    ).stderr
    assert "yuv420p(tv, smpte170m" in info  # the matrix used is declared for players
