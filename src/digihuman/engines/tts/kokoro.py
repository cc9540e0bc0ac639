"""Kokoro-82M v1.0 (int8 ONNX, onnxruntime on the CPU): Mandarin and English neural voices.

Front ends: Chinese through misaki's ``ZHG2P`` (jieba + pypinyin → Kokoro's IPA with tone
arrows), English through espeak-ng phonemes mapped to Kokoro's set by misaki's
``EspeakFallback`` (the espeak-ng library bundled by ``espeakng-loader``; misaki's own English
G2P needs a spaCy model that no registry we reach ships first-hand, so it is not used). Numbers
and dates are written as words by :mod:`digihuman.text` first; mixed sentences are split by script
and each run is spoken by the voice for its language.

One inference per sentence (longer phoneme strings are cut at pauses to fit the model's 510
tokens); while the caller consumes sentence N, sentence N+1 is already being synthesized on a
helper thread. The session and the front ends are built in the constructor (the factory), and
warmed up once, so the first request is not the slow one. Output: 24 kHz mono float32.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from digihuman.errors import InputError, MissingWeightsError, missing_extra
from digihuman.text import normalize_en, normalize_zh, sentences_for_speech
from digihuman.types import AudioChunk, TTSCapabilities

from . import kokoro_files as F
from .mixed import speak_sentence

log = logging.getLogger(__name__)

KOKORO_RATE = 24000
MAX_TOKENS = 510  # the model's context is 512 with the two pad tokens
_PAUSE_SPLIT = re.compile(r"(?<=[,.!?;:—…])\s+")


def _trim(x: np.ndarray, threshold: float = 0.008, pad_s: float = 0.04) -> np.ndarray:
    """Drop the near-silent head and tail the model produces (keeps ``pad_s`` around speech)."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    if len(loud) == 0:
        return x[:0]
    pad = int(pad_s * KOKORO_RATE)
    return x[max(0, loud[0] - pad) : loud[-1] + pad]


def split_phonemes(ps: str, max_tokens: int = MAX_TOKENS) -> list[str]:
    """Cut a phoneme string into pieces of at most ``max_tokens`` characters: at pauses
    (punctuation) first, then at word gaps, then anywhere."""
    ps = ps.strip()
    if len(ps) <= max_tokens:
        return [ps] if ps else []
    out: list[str] = []
    for unit in (_PAUSE_SPLIT, re.compile(r"\s+")):
        parts = [p for p in unit.split(ps) if p]
        if len(parts) > 1:
            cur = ""
            for p in parts:
                if cur and len(cur) + 1 + len(p) > max_tokens:
                    out.append(cur)
                    cur = ""
                cur = f"{cur} {p}" if cur else p
            if cur:
                out.append(cur)
            return [q for piece in out for q in split_phonemes(piece, max_tokens)]
    return [ps[i : i + max_tokens] for i in range(0, len(ps), max_tokens)]


def ahead(fn: Callable[[str], np.ndarray], items: list[str]) -> Iterator[np.ndarray]:
    """``fn(item)`` for each item in order, computing item i+1 on a helper thread while the
    caller handles item i (onnxruntime releases the GIL, so the two overlap)."""
    if len(items) <= 1:
        yield from (fn(i) for i in items)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-ahead")
    try:
        nxt: Future[np.ndarray] = pool.submit(fn, items[0])
        for i in range(len(items)):
            x = nxt.result()
            if i + 1 < len(items):
                nxt = pool.submit(fn, items[i + 1])
            yield x
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class KokoroTTS:
    """Kokoro-82M; one chunk per sentence at 24 kHz.

    ``voice_zh`` speaks Chinese runs, ``voice_en`` English ones (``None``: English is refused
    with a clear error — the ``auto`` engine keeps English on piper). ``speed`` 0.5-2.0 (1.0 the
    voice's own pace), ``threads`` onnxruntime intra-op threads.
    """

    name = "kokoro"

    def __init__(
        self,
        *,
        model_dir: str | Path | None = None,
        voice_zh: str = "zf_xiaoxiao",
        voice_en: str | None = "af_heart",
        speed: float = 1.0,
        threads: int = 2,
        prefetch: bool = True,
        warmup: bool = True,
        sentence_pause_s: float = 0.2,
        max_chars: int = 2000,
        max_sentence_chars: int = 200,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_extra("onnxruntime", "speech") from exc
        if not 0.5 <= speed <= 2.0:
            raise InputError(f"kokoro speed {speed} is out of range; use 0.5 to 2.0")
        self.root = Path(model_dir).expanduser() if model_dir else F.default_kokoro_dir()
        model = self._checked(F.MODEL_FILE, F.MODEL_SHA256)
        vocab_path = self._checked(F.VOCAB_FILE, F.VOCAB_SHA256)
        self._vocab: dict[str, int] = json.loads(vocab_path.read_text("utf-8"))["vocab"]
        self._voices = self._load_voices()
        self.voice_zh = self._installed_voice(voice_zh, "zh")
        self.voice_en = self._installed_voice(voice_en, "en") if voice_en else None
        self.speed = float(speed)
        self.prefetch = prefetch
        self.sentence_pause_s = sentence_pause_s
        self.max_chars, self.max_sentence_chars = max_chars, max_sentence_chars

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # onnxruntime's int8 warnings are noise here
        # no busy-waiting between ops: on a shared 2-core machine spinning threads steal the
        # core the caller (lip-sync, encoder) needs; measured 6.9 s spinning vs 5.4 s not, for
        # the same sentence under load
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session: Any = ort.InferenceSession(
                str(model), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a file that passed its checksum but does not load
            raise F.CorruptedError(
                f"the Kokoro model {model} does not load ({type(exc).__name__}); delete it and "
                f"{F.INSTALL_HINT}"
            ) from None
        self._zh_g2p = self._make_zh_g2p()
        self._en_g2p: dict[bool, Any] = {}
        self._lock = threading.Lock()  # the front ends are not documented as thread-safe
        self.capabilities = TTSCapabilities(
            sample_rate=KOKORO_RATE,
            languages=("zh", "en") if self.voice_en else ("zh",),
            voices=tuple(sorted(self._voices)),
        )
        if warmup:
            self.speak("你好。", "zh")
            if self.voice_en:
                self.speak("Hello.", "en")
        log.info(
            "kokoro loaded from %s (%d voices, zh %s, en %s, %d threads)",
            self.root, len(self._voices), self.voice_zh, self.voice_en, threads,
        )  # fmt: skip

    # --- files --------------------------------------------------------------------------

    def _checked(self, rel: str, sha256: str) -> Path:
        p = self.root / rel
        if not p.is_file():
            raise MissingWeightsError(
                f"the Kokoro TTS model is not installed ({p} is missing); {F.INSTALL_HINT}"
            )
        if not F.verified_once(p, sha256):
            raise F.CorruptedError(
                f"the Kokoro file {p} is corrupted (sha256 differs from the recorded one); "
                f"delete it and {F.INSTALL_HINT}"
            )
        return p

    def _load_voices(self) -> dict[str, np.ndarray]:
        voices: dict[str, np.ndarray] = {}
        folder = self.root / "voices"
        for p in sorted(folder.glob("*.bin")) if folder.is_dir() else []:
            name = p.stem
            if name in F.VOICES and not F.verified_once(p, F.VOICES[name]):
                raise F.CorruptedError(
                    f"the Kokoro voice {p} is corrupted (sha256 differs from the recorded one); "
                    f"delete it and {F.INSTALL_HINT}"
                )
            if p.stat().st_size != F.VOICE_SIZE:
                log.warning("skipping %s: not a Kokoro v1.0 voice pack (%d bytes)", p, F.VOICE_SIZE)
                continue
            voices[name] = np.fromfile(p, dtype="<f4").reshape(-1, 256)
        if not voices:
            raise MissingWeightsError(f"no Kokoro voices in {folder}; {F.INSTALL_HINT}")
        return voices

    def _installed_voice(self, name: str, language: str) -> str:
        if name not in self._voices:
            known = ", ".join(n for n in sorted(self._voices) if F.voice_language(n) == language)
            if name in F.VOICES:
                raise MissingWeightsError(
                    f"the Kokoro voice {name} is not installed in {self.root / 'voices'}; "
                    f"{F.INSTALL_HINT}"
                )
            raise InputError(
                f"unknown Kokoro voice {name!r}; installed {language} voices: {known or 'none'}"
            )
        return name

    # --- front ends ---------------------------------------------------------------------

    @staticmethod
    def _make_zh_g2p() -> Any:
        try:
            import jieba
            from misaki.zh import ZHG2P
        except ImportError as exc:
            raise missing_extra("misaki[zh]", "speech") from exc
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()  # loads its dictionary now, not in the first request
        return ZHG2P()  # version None: the front end Kokoro v1.0 was trained with

    def _english(self, british: bool) -> Any:
        g2p = self._en_g2p.get(british)
        if g2p is None:
            try:
                from misaki.espeak import EspeakFallback
            except ImportError as exc:
                raise missing_extra("phonemizer-fork and espeakng-loader", "speech") from exc
            g2p = self._en_g2p[british] = EspeakFallback(british=british)
        return g2p

    def phonemes(self, text: str, language: str, voice: str | None = None) -> str:
        """Kokoro phonemes for one run of text in one language (numbers read as words)."""
        with self._lock:
            if language == "zh":
                ps, _ = self._zh_g2p(normalize_zh(text))
            else:
                british = (voice or self.voice_en or "a").startswith("b")
                ps, _ = self._english(british)(SimpleNamespace(text=normalize_en(text)))
        return (ps or "").strip()

    # --- synthesis ----------------------------------------------------------------------

    def _infer(self, ps: str, voice: str) -> np.ndarray:
        tokens = [self._vocab[c] for c in ps if c in self._vocab]
        if not tokens:
            return np.zeros(0, dtype=np.float32)
        pack = self._voices[voice]
        style = pack[min(len(tokens), len(pack)) - 1].reshape(1, 256)
        audio = self._session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": np.ascontiguousarray(style, dtype=np.float32),
                "speed": np.array([self.speed], dtype=np.float32),
            },
        )[0]
        return _trim(np.asarray(audio, dtype=np.float32).reshape(-1))

    def _voice_for(self, language: str, voice: str | None) -> str:
        if voice and F.voice_language(voice) == language:
            return voice
        if language == "zh":
            return self.voice_zh
        if self.voice_en is None:
            raise InputError(
                "no English Kokoro voice is set (tts.kokoro_voice_en); use the 'auto' engine "
                "(English on piper) or pick one, e.g. af_heart"
            )
        return self.voice_en

    def speak(self, text: str, language: str, voice: str | None = None) -> np.ndarray:
        """One run of text in one language → samples at 24 kHz (no limit checks)."""
        name = self._voice_for(language, voice)
        pieces = [self._infer(p, name) for p in split_phonemes(self.phonemes(text, language, name))]
        pieces = [p for p in pieces if len(p)]
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        if len(pieces) == 1:
            return pieces[0]
        from .stream import join_pieces

        return join_pieces(pieces, KOKORO_RATE, gap_ms=120.0)

    def check_voice(self, voice: str | None) -> str | None:
        """``voice`` when it is an installed Kokoro voice, else :class:`InputError`."""
        if voice is None:
            return None
        if voice not in self._voices:
            raise InputError(
                f"unknown Kokoro voice {voice!r}; installed: {', '.join(sorted(self._voices))}"
            )
        return voice

    def _sentence(self, sentence: str, language: str | None, voice: str | None) -> np.ndarray:
        x = speak_sentence(
            sentence, language, lambda t, lang: self.speak(t, lang, voice), KOKORO_RATE
        )
        if not len(x):
            return x
        pause = np.zeros(int(self.sentence_pause_s * KOKORO_RATE), dtype=np.float32)
        return np.concatenate([x, pause])

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[AudioChunk]:
        voice = self.check_voice(voice)
        sentences = sentences_for_speech(text, self.max_chars, self.max_sentence_chars)

        def one(sentence: str) -> np.ndarray:
            return self._sentence(sentence, language, voice)

        for x in ahead(one, sentences) if self.prefetch else map(one, sentences):
            if len(x):
                yield AudioChunk(x, KOKORO_RATE)
