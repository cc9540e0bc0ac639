"""The Kokoro engine against the real model that scripts/install.sh places (no fake): audio,
streaming, voices, speed, mixed text, numbers; its files (missing, corrupted) and the auto
engine's choice."""

from __future__ import annotations

import logging
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digihuman.config import TTSSettings
from digihuman.engines.tts import create_tts, synthesize_array
from digihuman.engines.tts import kokoro_files as F
from digihuman.engines.tts.kokoro import KokoroTTS, split_phonemes
from digihuman.errors import InputError, MissingWeightsError

ROOT = F.default_kokoro_dir()
ZH_VOICES = {"zf_xiaobei", "zf_xiaoni", "zf_xiaoxiao", "zf_xiaoyi"} | {
    "zm_yunjian", "zm_yunxi", "zm_yunxia", "zm_yunyang"
}  # fmt: skip


@pytest.fixture(scope="module")
def kokoro() -> KokoroTTS:
    # installed by scripts/install.sh (make test runs it first); a missing model fails here with
    # the line naming that command
    return KokoroTTS(model_dir=ROOT, voice_en="af_heart", threads=2)


def _f0(x: np.ndarray, rate: int = 24000) -> float:
    """Median fundamental frequency (Hz) of the voiced 40 ms frames, by autocorrelation."""
    n = int(0.04 * rate)
    f0s = []
    for i in range(0, len(x) - n, n):
        w = x[i : i + n] - np.mean(x[i : i + n])
        if np.sqrt(np.mean(w**2)) < 0.02:
            continue
        ac = np.correlate(w, w, "full")[n - 1 :]
        lo, hi = rate // 400, rate // 70  # 70-400 Hz
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            f0s.append(rate / lag)
    return float(np.median(f0s))


def test_short_chinese_sentence_is_24k_speech(kokoro: KokoroTTS) -> None:
    text = "你好，欢迎参加今天的面试。"
    chunks = list(kokoro.synthesize(text))
    assert len(chunks) == 1 and chunks[0].sample_rate == 24000
    x = chunks[0].samples
    assert x.dtype == np.float32
    seconds = len(x) / 24000
    assert 0.12 * len(text) < seconds < 0.5 * len(text)  # Mandarin: ~4-6 characters a second
    assert np.sqrt(np.mean(x**2)) > 0.02 and np.max(np.abs(x)) <= 1.5
    assert set(kokoro.capabilities.voices) >= ZH_VOICES


def test_first_chunk_comes_after_the_first_sentence(kokoro: KokoroTTS) -> None:
    started: list[str] = []
    real = kokoro._sentence

    def spy(sentence: str, language: str | None, voice: str | None) -> np.ndarray:
        started.append(sentence)
        return real(sentence, language, voice)

    kokoro._sentence = spy  # type: ignore[method-assign]
    try:
        stream = kokoro.synthesize("第一句话。第二句话。第三句话。第四句话。")
        first = next(stream)
        assert len(first.samples) > 0
        # sentence 1 is done, sentence 2 may be running ahead; 3 and 4 have not started
        assert started[0] == "第一句话。" and len(started) <= 2
        rest = list(stream)
        assert len(rest) == 3 and len(started) == 4
    finally:
        del kokoro._sentence  # type: ignore[attr-defined]


def test_a_stream_dropped_early_stops(kokoro: KokoroTTS) -> None:
    started: list[str] = []
    real = kokoro._sentence

    def spy(sentence: str, language: str | None, voice: str | None) -> np.ndarray:
        started.append(sentence)
        return real(sentence, language, voice)

    kokoro._sentence = spy  # type: ignore[method-assign]
    try:
        stream = kokoro.synthesize("一。二。三。四。五。六。")
        next(stream)
        stream.close()
        # the helper thread finishes the sentence it was on, then stops
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
            t.name.startswith("tts-ahead") for t in threading.enumerate()
        ):
            time.sleep(0.05)
        assert not any(t.name.startswith("tts-ahead") for t in threading.enumerate())
        assert len(started) <= 2, started  # sentences 3-6 were never spoken
    finally:
        del kokoro._sentence  # type: ignore[attr-defined]


def test_voice_by_name(kokoro: KokoroTTS) -> None:
    text = "请介绍一下你自己。"
    female, _ = synthesize_array(kokoro, text)  # zf_xiaoxiao
    male, _ = synthesize_array(kokoro, text, voice="zm_yunjian")
    assert _f0(male) < 0.8 * _f0(female), (_f0(male), _f0(female))
    en_default, _ = synthesize_array(kokoro, "Good morning.", language="en")
    en_male, _ = synthesize_array(kokoro, "Good morning.", voice="am_michael", language="en")
    assert _f0(en_male) < 0.8 * _f0(en_default)


def test_bad_voice_is_a_clear_error(kokoro: KokoroTTS) -> None:
    with pytest.raises(InputError, match=r"unknown Kokoro voice 'zf_nobody'; installed: .*zf_xiao"):
        list(kokoro.synthesize("你好。", voice="zf_nobody"))
    with pytest.raises(InputError, match="installed zh voices: zf_xiaobei"):
        KokoroTTS(model_dir=ROOT, voice_zh="zf_nobody", warmup=False)
    with pytest.raises(InputError, match="speed"):
        KokoroTTS(model_dir=ROOT, speed=5.0)


def test_speed_changes_duration(kokoro: KokoroTTS) -> None:
    text = "我们会在一周内通知你面试结果。"
    normal, _ = synthesize_array(kokoro, text)
    kokoro.speed = 1.5
    try:
        fast, _ = synthesize_array(kokoro, text)
    finally:
        kokoro.speed = 1.0
    assert len(fast) < 0.8 * len(normal)


def test_mixed_text_is_spoken_by_the_right_voices(kokoro: KokoroTTS) -> None:
    calls: list[tuple[str, str]] = []
    real = kokoro._infer

    def spy(ps: str, voice: str) -> np.ndarray:
        calls.append((ps, voice))
        return real(ps, voice)

    kokoro._infer = spy  # type: ignore[method-assign]
    try:
        chunks = list(kokoro.synthesize("我喜欢Python编程。"))
    finally:
        del kokoro._infer  # type: ignore[attr-defined]
    assert len(chunks) == 1
    assert [v for _, v in calls] == ["zf_xiaoxiao", "af_heart", "zf_xiaoxiao"]
    assert "↓" in calls[0][0] or "→" in calls[0][0]  # Mandarin tones in the Chinese runs
    assert not any(c in calls[1][0] for c in "↓→↗↘")  # no tones in the English run
    x = chunks[0].samples
    assert np.max(np.abs(np.diff(x))) < 1.0  # faded seams, no clicks


def test_numbers_and_dates_are_read_through_the_normaliser(kokoro: KokoroTTS) -> None:
    assert kokoro.phonemes("2024年3月15日", "zh") == kokoro.phonemes("二零二四年三月十五日", "zh")
    assert kokoro.phonemes("50%", "zh") == kokoro.phonemes("百分之五十", "zh")
    assert kokoro.phonemes("at 10:30", "en") == kokoro.phonemes("at ten thirty", "en")


def test_long_phoneme_strings_are_cut_at_pauses() -> None:
    ps = ", ".join(["ni↓xau↓ ʂɻ↘ʨje↘"] * 60)  # ~900 characters
    pieces = split_phonemes(ps)
    assert all(len(p) <= 510 for p in pieces) and len(pieces) >= 2
    assert all(p.endswith(",") for p in pieces[:-1])  # cut after a pause, not inside a word
    assert "".join(pieces).replace(" ", "") == ps.replace(" ", "")
    assert split_phonemes("a" * 1200) == ["a" * 510, "a" * 510, "a" * 180]


def test_long_sentence_over_the_token_limit_is_spoken(kokoro: KokoroTTS) -> None:
    text = "，".join(["我们希望你能够详细地介绍你在上一家公司负责的项目"] * 6) + "。"
    assert len(kokoro.phonemes(text, "zh")) > 510
    x, rate = synthesize_array(kokoro, text)
    assert len(x) / rate > 0.15 * len(text)


# --- files ------------------------------------------------------------------------------


def _copy_install(dest: Path) -> Path:
    (dest / "voices").mkdir(parents=True)
    for rel in (F.MODEL_FILE, F.VOCAB_FILE, "voices/zf_xiaoxiao.bin"):
        shutil.copyfile(ROOT / rel, dest / rel)
    return dest


def test_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        KokoroTTS(model_dir=tmp_path / "none")
    msg = str(err.value)
    assert "\n" not in msg and "is not installed" in msg and "scripts/install.sh" in msg
    assert F.MODEL_FILE in msg
    with pytest.raises(MissingWeightsError, match=r"scripts/install\.sh"):
        create_tts(TTSSettings(engine="kokoro", kokoro_dir=str(tmp_path / "none")))


def test_corrupted_model_or_voice_is_a_clear_error(tmp_path: Path) -> None:
    d = _copy_install(tmp_path / "k")
    assert KokoroTTS(model_dir=d, voice_en=None, warmup=False).voice_zh == "zf_xiaoxiao"
    with open(d / F.MODEL_FILE, "r+b") as f:  # one flipped byte in the weights
        f.seek(F.MODEL_SIZE // 2)
        b = f.read(1)
        f.seek(F.MODEL_SIZE // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(F.CorruptedError, match=r"is corrupted .*scripts/install\.sh"):
        KokoroTTS(model_dir=d, voice_en=None, warmup=False)
    shutil.copyfile(ROOT / F.MODEL_FILE, d / F.MODEL_FILE)
    with open(d / "voices" / "zf_xiaoxiao.bin", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(F.CorruptedError, match=r"zf_xiaoxiao\.bin is corrupted"):
        KokoroTTS(model_dir=d, voice_en=None, warmup=False)
    rows = {r.path: r.status for r in F.check_files(d)}
    assert rows[F.MODEL_FILE] == "ok" and rows["voices/zf_xiaoxiao.bin"] == "BAD"
    assert rows["voices/zm_yunjian.bin"] == "missing"


def test_voices_come_only_from_the_recorded_tarball(tmp_path: Path) -> None:
    fake = tmp_path / "kokoro-js-1.2.1.tgz"
    with tarfile.open(fake, "w:gz") as tar:
        src = ROOT / "voices" / "zf_xiaoxiao.bin"
        tar.add(src, arcname="package/voices/zf_xiaoxiao.bin")
    with pytest.raises(MissingWeightsError, match="expected 1f0d0383"):
        F.install_voices(fake, tmp_path / "k")
    assert not (tmp_path / "k" / "voices" / "zf_xiaoxiao.bin").exists()


def test_installed_files_match_the_recorded_checksums() -> None:
    rows = F.check_files(ROOT)
    assert all(r.status == "ok" for r in rows), [r for r in rows if r.status != "ok"]


def test_models_verify_lists_the_kokoro_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from digihuman.cli import app

    res = CliRunner().invoke(app, ["models", "verify", "--models-dir", str(tmp_path)])
    out = res.output
    assert f"kokoro (tts): {ROOT}" in out
    for rel in (F.MODEL_FILE, F.VOCAB_FILE, *(f"voices/{v}.bin" for v in ZH_VOICES)):
        line = next(ln for ln in out.splitlines() if ln.startswith(rel + " "))
        assert " ok " in line and "sha256" in line


# --- auto -------------------------------------------------------------------------------


def test_auto_speaks_chinese_with_kokoro_and_english_with_piper() -> None:
    auto = create_tts(TTSSettings())
    assert type(auto.mandarin).__name__ == "KokoroTTS"  # type: ignore[attr-defined]
    assert type(auto.english).__name__ == "PiperTTS"  # type: ignore[attr-defined]
    assert auto.capabilities.sample_rate == 24000
    assert auto.capabilities.voices == ("en_US-joe-medium", "zf_xiaoxiao")
    x, rate = synthesize_array(auto, "你好。Hello.")
    assert rate == 24000 and len(x) > 0.5 * rate
    # a Kokoro voice name picks that voice; one shaped like it but not installed is refused
    male, _ = synthesize_array(auto, "你好，请坐。", voice="zm_yunjian")
    assert len(male) > 0
    with pytest.raises(InputError, match="unknown Kokoro voice 'zm_nobody'"):
        list(auto.synthesize("你好。", voice="zm_nobody"))


def test_auto_uses_a_kokoro_english_voice_only_when_set() -> None:
    auto = create_tts(TTSSettings(kokoro_voice_en="bf_emma"))
    assert auto.english is auto.mandarin  # type: ignore[attr-defined]
    assert auto.capabilities.voices == ("bf_emma", "zf_xiaoxiao")


def test_auto_falls_back_to_espeak_without_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        auto = create_tts(TTSSettings(kokoro_dir=str(tmp_path / "absent")))
    assert type(auto.mandarin).__name__ == "EspeakTTS"  # type: ignore[attr-defined]
    assert auto.capabilities.sample_rate == 22050
    assert "falls back to espeak-ng" in caplog.text and "scripts/install.sh" in caplog.text
    x, _ = synthesize_array(auto, "你好。")
    assert len(x) > 0


def test_auto_refuses_a_corrupted_model(tmp_path: Path) -> None:
    d = _copy_install(tmp_path / "k")
    (d / F.VOCAB_FILE).write_text('{"vocab": {}}')
    with pytest.raises(F.CorruptedError, match=r"vocab\.json is corrupted"):
        create_tts(TTSSettings(kokoro_dir=str(d)))
