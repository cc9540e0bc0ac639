"""Shared fixtures: a real portrait, real speech, an isolated data root."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(__file__).resolve().parent.parent / "src" / "digihuman" / "assets"

# tests never touch the user's data root or their Redis db 0
os.environ.setdefault("DIGIHUMAN_DATA_DIR", str(Path("/tmp") / f"digihuman-test-{os.getpid()}"))


@pytest.fixture(scope="session")
def portrait_rgb() -> np.ndarray:
    """The public-domain astronaut portrait (512×512 RGB)."""
    from PIL import Image

    return np.asarray(Image.open(ASSETS / "portrait.jpg").convert("RGB"))


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    """10.6 s of real English speech (espeak-ng), 16 kHz mono float32."""
    with wave.open(str(ASSETS / "speech_en.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data-root"
    monkeypatch.setenv("DIGIHUMAN_DATA_DIR", str(root))
    return root
