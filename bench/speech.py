"""Speech figures: real-time factors, round-trip accuracy (TTS → ASR), time to first chunk.

    .venv/bin/python bench/speech.py [--quick] [--voices zf_xiaoxiao,zm_yunjian] [--show]

Rows: the default engine (auto) per language, piper, espeak, and Kokoro: every installed
Mandarin voice on interview sentences (against espeak-ng on the same sentences) and Kokoro's
English voices against piper. ``--quick`` (about two minutes): 3 sentences, two voices each.

Round trip: each sentence is spoken by a TTS engine, resampled to 16 kHz and transcribed by the
default ASR (faster-whisper base, int8, CPU) with the language given. English is scored by word
accuracy (1 - WER), Mandarin by character accuracy (1 - CER), after the same normalisation on both
sides (numbers written as words, punctuation and case dropped).
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import numpy as np

from digihuman.config import ASRSettings, TTSSettings
from digihuman.engines.asr import create_asr
from digihuman.engines.tts import create_tts, speech_stream
from digihuman.engines.tts.stream import collect
from digihuman.errors import DigihumanError
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
# Interview language, written before any was heard; nobody tuned the engines on them.
ZH_INTERVIEW = [
    "请先简单介绍一下你自己。",
    "你为什么想加入我们公司？",
    "请谈谈你上一份工作的主要职责。",
    "你最大的优点和缺点分别是什么？",
    "你为什么离开上一家公司？",
    "请举一个你解决困难问题的例子。",
    "你如何处理和同事之间的分歧？",
    "未来五年你有什么职业规划？",
    "你对这个职位有哪些了解？",
    "你期望的薪资是多少？",
    "你能接受经常出差吗？",
    "请描述一次你带领团队完成项目的经历。",
    "你在工作中遇到过最大的挑战是什么？",
    "你平时如何学习新的技能？",
    "如果工作压力很大，你会怎么调整自己？",
    "你最快什么时候可以入职？",
    "你更喜欢独立工作还是团队合作？",
    "请说说你对加班的看法。",
    "你有什么问题想问我们吗？",
    "感谢你今天来参加面试，我们会在一周内通知你结果。",
    "你在大学期间参加过哪些社会实践活动？",
    "请用三个词来形容你自己。",
]
# first audio: the time until the first chunk of a text whose first sentence has 22 characters
FIRST_ZH = "请先简单介绍一下你的教育背景和最近的工作经历。然后说说你为什么应聘这个职位。"
FIRST_EN = "Please tell me about your education and your most recent job. Then tell me why."
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


def _round_trip(tts, asr, refs, lang, voice=None, show=""):  # type: ignore[no-untyped-def]
    """(TTS real-time factor, accuracy, ASR seconds, ASR audio seconds, clips)."""
    hyps: list[str] = []
    synth = audio = asr_time = 0.0
    clips = []
    for sentence in refs:
        t0 = time.perf_counter()
        x, _ = collect(speech_stream(tts, sentence, voice=voice, language=lang))
        synth += time.perf_counter() - t0
        audio += len(x) / 16000
        t0 = time.perf_counter()
        hyp = asr.transcribe(x, language=lang).text
        asr_time += time.perf_counter() - t0
        hyps.append(hyp)
        clips.append(x)
        if show:
            print(f"  {show}: {sentence} -> {hyp}", flush=True)
    acc = accuracy(refs, hyps, en_tokens if lang == "en" else zh_tokens)
    return synth / max(audio, 1e-9), acc, asr_time, audio, clips


def _first_audio(tts, text, lang, voice=None) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    stream = speech_stream(tts, text, voice=voice, language=lang)
    next(stream)
    first = time.perf_counter() - t0
    for _ in stream:
        pass
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 sentences, two voices per language")
    ap.add_argument("--voices", default="", help="Kokoro voices to measure (default: installed)")
    ap.add_argument("--show", action="store_true", help="print every recognised sentence")
    args = ap.parse_args()
    n = 3 if args.quick else len(EN)
    en, zh, zh_iv = EN[:n], ZH[:n], ZH_INTERVIEW[: 3 if args.quick else len(ZH_INTERVIEW)]

    asr_settings = ASRSettings()
    asr = create_asr(asr_settings)
    asr.transcribe(np.zeros(1600, np.float32) + 0.01)  # warm-up
    engines = {
        "auto": create_tts(TTSSettings(engine="auto")),
        "piper": create_tts(TTSSettings(engine="piper")),
        "espeak": create_tts(TTSSettings(engine="espeak")),
    }
    try:
        engines["kokoro"] = create_tts(TTSSettings(engine="kokoro"))
    except DigihumanError as exc:
        print(f"kokoro rows skipped: {exc}")
    # (row label, engine, language, sentences, voice)
    plan: list[tuple[str, str, str, list[str], str | None]] = [
        ("auto", "auto", "en", en, None),
        ("auto", "auto", "zh", zh, None),
        ("espeak", "espeak", "zh", zh_iv, None),
        ("piper", "piper", "en", en, None),
    ]
    if not args.quick:
        plan += [("espeak", "espeak", "en", en, None)]
    if "kokoro" in engines:
        installed = engines["kokoro"].capabilities.voices
        wanted = [v for v in args.voices.split(",") if v] or list(installed)
        zh_voices = [v for v in wanted if v.startswith("z")]
        en_voices = [v for v in wanted if v[:1] in "ab"]
        if args.quick and not args.voices:
            zh_voices = [v for v in ("zf_xiaoxiao", "zm_yunjian") if v in installed]
            en_voices = [v for v in ("af_heart",) if v in installed]
        plan += [(f"kokoro {v}", "kokoro", "zh", zh_iv, v) for v in zh_voices]
        plan += [(f"kokoro {v}", "kokoro", "en", en, v) for v in en_voices]
    rows = []
    asr_time = asr_audio = 0.0
    long_audio: list[np.ndarray] = []
    for label, name, lang, refs, voice in plan:
        tts = engines[name]
        rtf, acc, a_t, a_s, clips = _round_trip(
            tts, asr, refs, lang, voice, show=f"{label}/{lang}" if args.show else ""
        )
        asr_time, asr_audio = asr_time + a_t, asr_audio + a_s
        if name == "auto" and lang == "en":
            long_audio.extend(clips)
        first = _first_audio(tts, FIRST_EN if lang == "en" else FIRST_ZH, lang, voice)
        text = "interview" if refs is zh_iv else "general"
        rows.append((label, lang, text, len(refs), rtf, acc, first))
        print(f"  {label}/{lang}: RTF {rtf:.3f}, accuracy {acc * 100:.1f} %, first {first:.2f} s",
              file=sys.stderr, flush=True)  # fmt: skip

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

    print("\nspeech round trip (ASR: whisper-base int8 CPU, language given)\n")
    print(
        f"{'tts':<20}{'lang':<5}{'text':<10}{'n':>3}{'TTS RTF':>9}{'accuracy':>10}"
        f"{'first audio s':>15}"
    )
    for label, lang, text, count, rtf, acc, first in rows:
        metric = "words" if lang == "en" else "chars"
        print(
            f"{label:<20}{lang:<5}{text:<10}{count:>3}{rtf:>9.3f}{acc * 100:>8.1f}% "
            f"{first:>13.2f}   ({metric})"
        )
    print(
        f"\nASR real-time factor (whisper base, int8, beam {asr_settings.beam_size}): "
        f"{asr_time / asr_audio:.3f} on single sentences; {long_rtf:.3f} on one "
        f"{len(joined) / 16000:.0f} s recording (word accuracy {long_acc * 100:.1f} %)"
    )
    print(f"language detected correctly (auto TTS, no hint): {detected}/{2 * n}")
    print("first audio: time to the first chunk of a text whose first sentence has 22 characters")


if __name__ == "__main__":
    main()
