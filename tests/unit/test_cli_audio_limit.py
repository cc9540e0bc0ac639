"""The CLI keeps the API's audio length limit (``api.max_audio_seconds``): an hour of Opus
silence (1.4 MB, 230 MB once decoded) is refused by ``render`` and ``asr`` with one line, before
any avatar preparation or model load, instead of being decoded whole."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digihuman.media.ffmpeg import run_ffmpeg


@pytest.fixture(scope="module")
def opus_hour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bomb")
    piece, out = tmp / "piece.ogg", tmp / "hour.ogg"
    src = ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "10"]
    run_ffmpeg(["-y", *src, "-c:a", "libopus", "-b:a", "6k", "-application", "voip", str(piece)])
    run_ffmpeg(["-y", "-stream_loop", "359", "-i", str(piece), "-c", "copy", str(out)])
    assert out.stat().st_size < 2 << 20
    return out


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "digihuman", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DIGIHUMAN_DATA_DIR": str(tmp_path / "root"), **(env or {})},
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip(), time.monotonic() - t0


def test_render_refuses_an_hour_of_audio(opus_hour: Path, tmp_path: Path) -> None:
    avatar = tmp_path / "face.png"  # never read: the audio is checked first
    avatar.write_bytes(b"")
    err, seconds = _cli(tmp_path, "render", "--avatar", str(avatar), "--audio", str(opus_hour))
    assert (
        err == "error: audio file hour.ogg is longer than the 600 s limit; give a shorter recording"
    )
    assert seconds < 30  # decoding stops at the limit (the whole hour would take ~5 s more)
    assert not (tmp_path / "root" / "avatars").exists() or not any(
        (tmp_path / "root" / "avatars").iterdir()
    )


def test_asr_refuses_audio_over_the_configured_limit(opus_hour: Path, tmp_path: Path) -> None:
    env = {"DIGIHUMAN_API__MAX_AUDIO_SECONDS": "30"}
    err, _ = _cli(tmp_path, "asr", "--engine", "fake", str(opus_hour), env=env)
    assert "longer than the 30 s limit" in err
