"""MuseTalk on a CUDA device (opt-in: ``pytest -m gpu``); tiny random models, official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BOX = (60, 50, 220, 260)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from digihuman.engines.lipsync.musetalk import random_weights as RW

    d = tmp_path_factory.mktemp("models")
    RW.write_layout(d, "v15", size="tiny")
    return d


def _inputs():
    rng = np.random.default_rng(0)
    frames = (rng.random((2, 300, 280, 3)) * 255).astype(np.uint8)
    t = np.arange(8000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(8000)).astype(
        np.float32
    )
    return frames, audio


def _render(tiny_dir: Path, **kw):
    from digihuman.engines.base import whole_audio
    from digihuman.engines.lipsync.musetalk.engine import MuseTalkEngine

    frames, audio = _inputs()
    eng = MuseTalkEngine(models_dir=tiny_dir, version="v15", batch_size=4, **kw)
    prep = eng.prepare_boxes(frames, 25.0, [BOX, BOX])
    return eng, prep, [f.image for f in eng.generate(prep, whole_audio(audio))]


def test_cuda_float32_matches_cpu(tiny_dir: Path) -> None:
    _, pc, cpu = _render(tiny_dir, device="cpu", dtype="float32")
    _, pg, gpu = _render(tiny_dir, device="cuda", dtype="float32")
    np.testing.assert_allclose(pc.arrays["latents"], pg.arrays["latents"], atol=1e-3)
    assert len(cpu) == len(gpu) == 13
    diff = max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(cpu, gpu, strict=True))
    assert diff <= 3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_runs(tiny_dir: Path, dtype: str) -> None:
    _, _, ref = _render(tiny_dir, device="cuda", dtype="float32")
    eng, _, out = _render(tiny_dir, device="cuda", dtype=dtype)
    assert len(out) == 13 and eng.capabilities.device == "cuda"
    mean_diff = np.mean(
        [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(ref, out, strict=True)]
    )
    assert mean_diff < 8  # same picture up to half-precision rounding


def test_compiled_unet_gives_the_same_frames(tiny_dir: Path) -> None:
    _, _, ref = _render(tiny_dir, device="cuda", dtype="float32")
    _, _, out = _render(tiny_dir, device="cuda", dtype="float32", compile=True)
    diff = max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(ref, out, strict=True))
    assert diff <= 2
