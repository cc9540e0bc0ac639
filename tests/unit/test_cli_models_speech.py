"""`digihuman models download --whisper/--funasr` without a network: fast, one-line failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("args", [["--whisper", "small"], ["--funasr"]])
def test_speech_model_download_fails_fast_offline(args: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens on the discard port
        "HOME": str(tmp_path),
        "DIGIHUMAN_DATA_DIR": str(tmp_path / "root"),
    }
    t = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "digihuman", "models", "download", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - t < 30
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: cannot reach http://127.0.0.1:9"), r.stderr
    assert not (tmp_path / ".cache" / "digihuman" / "whisper" / "small").exists()
