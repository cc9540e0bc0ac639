"""The offline TTS engines (real piper and espeak-ng), engine selection, streaming behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from digihuman.config import TTSSettings
from digihuman.engines.base import TTS, TTSEngine
from digihuman.engines.tts import create_tts, speech_stream, synthesize_array
from digihuman.engines.tts.stream import collect, resample_exact
from digihuman.errors import DigihumanError, InputError
from digihuman.types import AudioChunk


@pytest.fixture(scope="module")
def espeak() -> TTSEngine:
    return create_tts(TTSSettings(engine="espeak"))


@pytest.fixture(scope="module")
def auto() -> TTSEngine:
    # noise 0: piper becomes deterministic, so two runs can be compared sample for sample
    return create_tts(TTSSettings(engine="auto", piper_noise_scale=0.0, piper_noise_w=0.0))


def test_registry_names() -> None:
    names = {"auto", "kokoro", "piper", "espeak", "openai", "edge", "cosyvoice", "fake"}
    assert names <= set(TTS.names())


@pytest.mark.parametrize(
    ("engine", "cls"),
    [
        ("fake", "FakeTTS"),
        ("espeak", "EspeakTTS"),
        ("piper", "PiperTTS"),
        ("auto", "AutoTTS"),
        ("kokoro", "KokoroTTS"),
    ],
)
def test_engine_selection_by_settings(engine: str, cls: str) -> None:
    tts = create_tts(TTSSettings(engine=engine, max_chars=123))
    assert type(tts).__name__ == cls and tts.name == engine
    assert isinstance(tts, TTSEngine)
    assert tts.max_chars == 123  # type: ignore[attr-defined]  # the settings reached the engine


def test_unknown_engine_and_unconfigured_servers_say_what_to_do() -> None:
    with pytest.raises(InputError, match="unknown tts engine 'nope'; choose one of"):
        create_tts(TTSSettings(engine="nope"))
    with pytest.raises(DigihumanError, match=r"tts\.openai_base_url"):
        create_tts(TTSSettings(engine="openai"))
    with pytest.raises(DigihumanError, match=r"tts\.cosyvoice_url"):
        create_tts(TTSSettings(engine="cosyvoice"))


def test_fake_is_deterministic_and_one_chunk_per_sentence() -> None:
    tts = create_tts(TTSSettings(engine="fake"))
    a = list(tts.synthesize("Hello there. 你好。"))
    b = list(tts.synthesize("Hello there. 你好。"))
    assert len(a) == 2
    assert all(np.array_equal(x.samples, y.samples) for x, y in zip(a, b, strict=True))


def test_espeak_speaks_mandarin_and_english(espeak: TTSEngine) -> None:
    zh, rate = synthesize_array(espeak, "今天天气很好。")
    en, _ = synthesize_array(espeak, "The weather is nice today.")
    assert rate == 22050
    for x in (zh, en):
        assert 0.5 < len(x) / rate < 6.0 and np.max(np.abs(x)) > 0.1
    # numbers are spoken, not skipped: a number makes the sentence longer
    longer, _ = synthesize_array(espeak, "今天天气很好，气温是二十五度。")
    digits, _ = synthesize_array(espeak, "今天天气很好，气温是25度。")
    assert abs(len(longer) - len(digits)) < 0.05 * len(longer)


def test_piper_refuses_chinese_with_a_hint() -> None:
    with pytest.raises(InputError, match="English only"):
        list(create_tts(TTSSettings(engine="piper")).synthesize("你好"))


def test_auto_mixed_sentence_is_one_click_free_chunk(auto: TTSEngine) -> None:
    chunks = list(auto.synthesize("我喜欢Python编程。"))
    # Kokoro (Mandarin) at 24 kHz, piper (English) resampled to it
    assert len(chunks) == 1 and chunks[0].sample_rate == auto.capabilities.sample_rate == 24000
    x = chunks[0].samples
    # at the seams between engines the signal is faded: no step larger than speech itself has
    assert np.max(np.abs(np.diff(x))) < 1.0
    alone, _ = synthesize_array(auto, "我喜欢")
    assert len(x) > len(alone)


def test_streamed_16k_chunks_equal_the_whole_file(auto: TTSEngine) -> None:
    text = "Hello there. This is the second sentence. 这是第三句。"
    streamed = list(speech_stream(auto, text))
    assert len(streamed) >= 3 and all(c.sample_rate == 16000 for c in streamed)
    assert all(c.samples.dtype == np.float32 for c in streamed)
    whole, rate = synthesize_array(auto, text)  # the file `digihuman tts` writes
    x, _ = collect(streamed)
    np.testing.assert_array_equal(x, resample_exact(whole, rate, 16000))


def test_first_chunk_comes_before_later_sentences_are_spoken(espeak: TTSEngine) -> None:
    calls: list[str] = []
    real = espeak._run  # type: ignore[attr-defined]

    def counting(text: str, voice: str, rate: int, pitch: int | None = None) -> np.ndarray:
        calls.append(text)
        return real(text, voice, rate, pitch)  # type: ignore[no-any-return]

    espeak._run = counting  # type: ignore[attr-defined]
    try:
        stream = speech_stream(espeak, "First one. Second one. Third one.")
        first = next(stream)
        assert isinstance(first, AudioChunk) and len(calls) == 1
        rest = list(stream)
        assert len(calls) == 3 and rest
    finally:
        del espeak._run  # type: ignore[attr-defined]


def test_very_long_text_is_split_and_bounded() -> None:
    tts = create_tts(TTSSettings(engine="fake", max_chars=5000, max_sentence_chars=100))
    text = "，".join(["这是一个没有句号的很长很长的句子"] * 150)  # ~2400 chars, no full stop
    chunks = list(tts.synthesize(text))
    assert len(chunks) >= 24
    longest = max(len(c.samples) for c in chunks) / 16000
    assert longest <= 100 * 0.06 + 0.1 + 1e-6  # never more than 100 characters at once
    with pytest.raises(InputError, match="limit of 5000"):
        list(tts.synthesize("好" * 5001))
    with pytest.raises(InputError, match="empty"):
        list(speech_stream(tts, "  "))
