"""Round trips with the real offline engines: text → TTS → faster-whisper → text, the CLI, and
bad audio (corrupt, empty, silent, noise) giving a clear error or an empty transcript."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digihuman.config import ASRSettings, TTSSettings
from digihuman.engines.asr import create_asr
from digihuman.engines.base import ASREngine, TTSEngine
from digihuman.engines.tts import create_tts, speech_stream
from digihuman.engines.tts.stream import collect
from digihuman.errors import InputError
from digihuman.media.audio import load_audio

HAN_TRADITIONAL_ONLY = set("們這個國語說時間會來學書問開關門電車馬鳥魚長東車")


@pytest.fixture(scope="module")
def asr() -> ASREngine:
    return create_asr(ASRSettings(beam_size=1))


@pytest.fixture(scope="module")
def tts() -> TTSEngine:
    return create_tts(TTSSettings())


def words(text: str) -> set[str]:
    return set("".join(c if c.isalnum() or c == " " else " " for c in text.lower()).split())


def test_english_round_trip_with_language_detection(tts: TTSEngine, asr: ASREngine) -> None:
    x, rate = collect(speech_stream(tts, "Please open the window. The weather is nice today."))
    assert rate == 16000
    r = asr.transcribe(x)
    assert r.language == "en"
    assert {"open", "window", "weather", "nice", "today"} <= words(r.text)
    assert r.segments and r.segments[-1].end <= r.duration + 0.5


def test_mandarin_round_trip_is_simplified(tts: TTSEngine, asr: ASREngine) -> None:
    # espeak-ng's pinyin voice is hard for whisper-base; this sentence is one it recognises
    x, _ = collect(speech_stream(tts, "我们去公园散步吧。", language="zh"))
    r = asr.transcribe(x, language="zh")
    assert r.language == "zh"
    assert "散步" in r.text and "我们" in r.text
    assert not (set(r.text) & HAN_TRADITIONAL_ONLY)


def test_silent_noise_and_empty_audio(asr: ASREngine) -> None:
    silent = asr.transcribe(np.zeros(16000 * 2, np.float32))
    assert silent.text == "" and silent.segments == ()
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.005
    r = asr.transcribe(noise)  # must not crash; whisper may or may not hear something
    assert isinstance(r.text, str)
    with pytest.raises(InputError, match="empty"):
        asr.transcribe(np.zeros(0, np.float32))


def test_corrupt_and_empty_files_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(InputError):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        load_audio(empty)


def test_cli_tts_then_asr(tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    cli = [sys.executable, "-m", "digihuman"]
    done = subprocess.run(
        [*cli, "tts", "Good morning, my friend.", "-o", str(out), "--engine", "piper"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000
    done = subprocess.run(
        [*cli, "asr", str(out), "--language", "en"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert {"good", "morning", "friend"} <= words(done.stdout)
    done = subprocess.run(
        [*cli, "tts", "你好", "-o", str(out), "--engine", "piper"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: the piper voice speaks English")
    assert "Traceback" not in done.stderr
