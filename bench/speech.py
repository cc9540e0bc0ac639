"""Speech figures: real-time factors, round-trip accuracy (TTS → ASR), time to first chunk.

    .venv/bin/python bench/speech.py [--quick]

Round trip: each sentence is spoken by a TTS engine, resampled to 16 kHz and transcribed by the
default ASR (faster-whisper base, int8, CPU) with the language given. English is scored by word
accuracy (1 - WER), Mandarin by character accuracy (1 - CER), after the same normalisation on both
sides (numbers written as words, punctuation and case dropped).
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np

from digihuman.config import ASRSettings, TTSSettings
from digihuman.engines.asr import create_asr
from digihuman.engines.tts import create_tts, speech_stream
from digihuman.engines.tts.stream import collect
from digihuman.text import normalize_en, normalize_zh

EN = [
    "The weather is nice today.",
    "Please open the window before you leave.",
    "I would like a cup of coffee with milk.",
    "Our meeting starts at ten in the morning.",
    "She reads a book every night before bed.",
    "The train to London leaves from platform four.",
    "Can you help me carry these boxes upstairs?",
    "We planted three apple trees in the garden.",
    "The children are playing football in the park.",
    "My phone battery is almost empty.",
    "He forgot his umbrella at the office.",
    "This restaurant serves the best noodles in town.",
    "Turn left at the next traffic light.",
    "The museum is closed on Mondays.",
    "I have been learning to play the piano.",
    "Remember to drink enough water every day.",
    "The price of the ticket is twenty dollars.",
    "Our team won the game last weekend.",
    "Please send me the report by Friday.",
    "The cat is sleeping on the warm sofa.",
]
ZH = [
    "今天天气很好。",
    "我们去公园散步吧。",
    "请问火车站怎么走？",
    "我喜欢喝绿茶。",
    "这本书非常有意思。",
    "明天早上八点开会。",
    "他每天骑自行车上班。",
    "这家饭店的菜很好吃。",
    "请把窗户关上。",
    "我的手机没有电了。",
    "周末我们一起去看电影。",
    "孩子们在学校学习中文。",
    "这个苹果五块钱。",
    "妈妈在厨房做饭。",
    "外面下雨了，记得带伞。",
    "我们下个月去北京旅行。",
    "医生说你需要多休息。",
    "图书馆在三楼。",
    "他的中文说得很流利。",
    "谢谢你的帮助。",
]


def _edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def en_tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", normalize_en(text).lower().replace("-", " ")).split()


def zh_tokens(text: str) -> list[str]:
    return [c for c in normalize_zh(text) if re.match(r"[\u4e00-\u9fff]", c)]


def accuracy(refs: list[str], hyps: list[str], tokens) -> float:  # type: ignore[no-untyped-def]
    errors = sum(_edit_distance(tokens(r), tokens(h)) for r, h in zip(refs, hyps, strict=True))
    total = sum(len(tokens(r)) for r in refs)
    return max(0.0, 1.0 - errors / max(1, total))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 sentences per language")
    ap.add_argument("--show", action="store_true", help="print every recognised sentence")
    args = ap.parse_args()
    n = 3 if args.quick else len(EN)
    en, zh = EN[:n], ZH[:n]

    asr_settings = ASRSettings()
    asr = create_asr(asr_settings)
    asr.transcribe(np.zeros(1600, np.float32) + 0.01)  # warm-up
    engines = {
        "auto": create_tts(TTSSettings(engine="auto")),
        "piper": create_tts(TTSSettings(engine="piper")),
        "espeak": create_tts(TTSSettings(engine="espeak")),
    }
    plan = [("auto", "en"), ("auto", "zh"), ("piper", "en"), ("espeak", "en"), ("espeak", "zh")]
    if args.quick:
        plan = [("auto", "en"), ("auto", "zh"), ("espeak", "en")]
    rows = []
    asr_time = asr_audio = 0.0
    long_audio: list[np.ndarray] = []
    for name, lang in plan:
        tts = engines[name]
        refs = en if lang == "en" else zh
        hyps: list[str] = []
        synth = audio = 0.0
        for sentence in refs:
            t0 = time.perf_counter()
            x, _ = collect(speech_stream(tts, sentence, language=lang))
            synth += time.perf_counter() - t0
            audio += len(x) / 16000
            t0 = time.perf_counter()
            hyp = asr.transcribe(x, language=lang).text
            asr_time += time.perf_counter() - t0
            asr_audio += len(x) / 16000
            hyps.append(hyp)
            if name == "auto" and lang == "en":
                long_audio.append(x)
            if args.show:
                print(f"  {name}/{lang}: {sentence} -> {hyp}")
        acc = accuracy(refs, hyps, en_tokens if lang == "en" else zh_tokens)
        paragraph = " ".join(refs[:3]) if lang == "en" else "".join(refs[:3])
        t0 = time.perf_counter()
        stream = speech_stream(tts, paragraph, language=lang)
        next(stream)
        first = time.perf_counter() - t0
        rest = sum(len(c.samples) for c in stream)
        total_t = time.perf_counter() - t0
        del rest
        rows.append((name, lang, len(refs), synth / audio, acc, first, total_t))

    # long audio: whisper encodes 30 s windows, so short clips cost as much as 30 s of speech
    joined = np.concatenate(long_audio)
    t0 = time.perf_counter()
    long_text = asr.transcribe(joined, language="en").text
    long_rtf = (time.perf_counter() - t0) / (len(joined) / 16000)
    long_acc = accuracy([" ".join(en)], [long_text], en_tokens)

    # language detection on the default engine's output (no language given)
    detected = 0
    for sentence, lang in [(s, "en") for s in en] + [(s, "zh") for s in zh]:
        x, _ = collect(speech_stream(engines["auto"], sentence))
        detected += asr.transcribe(x).language == lang

    print(f"\nspeech round trip ({n} sentences per language; ASR: whisper-base int8 CPU)\n")
    print(
        f"{'tts':<8}{'lang':<6}{'n':>3}{'TTS RTF':>9}{'accuracy':>10}"
        f"{'1st chunk s':>13}{'3 sentences s':>15}"
    )
    for name, lang, count, rtf, acc, first, total_t in rows:
        metric = "words" if lang == "en" else "chars"
        print(
            f"{name:<8}{lang:<6}{count:>3}{rtf:>9.3f}{acc * 100:>8.1f}% {first:>11.2f}"
            f"{total_t:>15.2f}   ({metric})"
        )
    print(
        f"\nASR real-time factor (whisper base, int8, beam {asr_settings.beam_size}): "
        f"{asr_time / asr_audio:.3f} on single sentences; {long_rtf:.3f} on one "
        f"{len(joined) / 16000:.0f} s recording (word accuracy {long_acc * 100:.1f} %)"
    )
    print(f"language detected correctly (auto TTS, no hint): {detected}/{2 * n}")


if __name__ == "__main__":
    main()
