"""FunASR paraformer-zh (Mandarin, with VAD and punctuation models) through the ``funasr``
package (the ``funasr`` extra). Weights are read from local folders, never fetched at run time:
``model_dir`` holds ``paraformer-zh/``, ``fsmn-vad/`` and ``ct-punc/`` (see
:func:`download_funasr`), or ``model`` names a folder directly.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.errors import MissingWeightsError, missing_extra
from digihuman.types import ASRCapabilities, Transcript, TranscriptSegment

from .common import check_audio, duration_s, is_silent, to_simplified

log = logging.getLogger(__name__)

FUNASR_REPOS = {
    "paraformer-zh": "funasr/paraformer-zh",
    "fsmn-vad": "funasr/fsmn-vad",
    "ct-punc": "funasr/ct-punc",
}


def default_funasr_dir() -> Path:
    return Path.home() / ".cache" / "digihuman" / "funasr"


def _cjk_spaces(text: str) -> str:
    """Paraformer separates tokens with spaces; drop those between Chinese characters."""
    return re.sub(
        r"(?<=[\u3400-\u9fff，。？！、])\s+(?=[\u3400-\u9fff，。？！、])", "", text
    ).strip()


def map_funasr_result(result: list[dict[str, Any]], duration: float) -> tuple[str, tuple]:
    """FunASR ``generate`` output → (text, segments). Uses ``sentence_info`` (ms) when the punc
    model gave it, else the token ``timestamp`` list (ms) for one segment."""
    texts: list[str] = []
    segs: list[TranscriptSegment] = []
    for item in result:
        text = to_simplified(_cjk_spaces(str(item.get("text", ""))))
        if not text:
            continue
        texts.append(text)
        info = item.get("sentence_info") or []
        if info:
            for s in info:
                st = to_simplified(_cjk_spaces(str(s.get("text", ""))))
                if st:
                    segs.append(TranscriptSegment(s["start"] / 1000.0, s["end"] / 1000.0, st))
            continue
        stamps = item.get("timestamp") or []
        if stamps:
            segs.append(TranscriptSegment(stamps[0][0] / 1000.0, stamps[-1][1] / 1000.0, text))
        else:
            segs.append(TranscriptSegment(0.0, duration, text))
    return "".join(texts), tuple(segs)


def _folder(name_or_path: str, root: Path) -> Path:
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    folder = root / name_or_path
    if folder.is_dir():
        return folder
    raise MissingWeightsError(
        f"FunASR model '{name_or_path}' is not in {folder}: run 'digihuman models download "
        f"funasr' (needs a network) or set asr.funasr_model to a model folder"
    )


def download_funasr(dest: str | os.PathLike[str], *, endpoint: str | None = None) -> Path:
    """Download paraformer-zh, fsmn-vad and ct-punc from Hugging Face into ``dest``."""
    try:
        import huggingface_hub
    except ImportError as exc:
        raise missing_extra("huggingface_hub", "speech") from exc
    from huggingface_hub import constants as hf_constants

    from .whisper import _reachable

    hub = endpoint or hf_constants.ENDPOINT
    if not _reachable(hub, 5.0):
        from digihuman.errors import DigihumanError

        raise DigihumanError(f"cannot reach {hub} to download the FunASR models (no network?)")
    dest = Path(dest)
    for name, repo in FUNASR_REPOS.items():
        huggingface_hub.snapshot_download(repo, local_dir=str(dest / name), endpoint=endpoint)
    return dest


class FunASR:
    name = "funasr"

    def __init__(
        self,
        *,
        model: str = "paraformer-zh",
        model_dir: str | os.PathLike[str] | None = None,
        vad_model: str | None = "fsmn-vad",
        punc_model: str | None = "ct-punc",
        device: str = "cpu",
    ) -> None:
        try:
            from funasr import AutoModel
        except ImportError as exc:
            raise missing_extra("funasr", "funasr") from exc
        root = Path(model_dir).expanduser() if model_dir else default_funasr_dir()
        kwargs: dict[str, Any] = {"model": str(_folder(model, root)), "device": device}
        if vad_model:
            kwargs["vad_model"] = str(_folder(vad_model, root))
        if punc_model:
            kwargs["punc_model"] = str(_folder(punc_model, root))
        self._model: Any = AutoModel(**kwargs, disable_update=True)
        self.model_name = model
        self.capabilities = ASRCapabilities(languages=("zh",))

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        x = check_audio(audio)
        options: dict[str, Any] = {"engine": self.name, "model": self.model_name}
        if is_silent(x):
            return Transcript("", "zh", (), duration_s(x), options)
        result = self._model.generate(input=x, batch_size_s=300)
        text, segs = map_funasr_result(list(result), duration_s(x))
        return Transcript(text, "zh", segs, duration_s(x), options)
