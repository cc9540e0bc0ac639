"""MuseTalk throughput: per-stage frames/s on the CPU, the realtime loop on a GPU.

    .venv/bin/python bench/musetalk.py            # full-size random weights (written to a temp
                                                  # dir unless --models-dir), CPU or GPU table
    .venv/bin/python bench/musetalk.py --quick    # tiny random models: pipeline overhead only

CPU table: frames/s of each stage (features, UNet, VAE decode, blend) at batch 1 and 8, and of
the whole generate loop; then one long realtime segment (10 min quick, 60 min full): per-batch
cost and the feature stream's memory in the first, middle and last minute (flat, not growing).
GPU table (when CUDA is present): steady-state frames/s of the realtime
loop on a prepared avatar at batch 4/8/16/32 in fp16 and bf16, with and without torch.compile,
avatar preparation frames/s and peak GPU memory. Random weights cost exactly what the official
ones cost (same shapes, same kernels); the frames they produce are noise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

BOX = (96, 80, 416, 432)


def _frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((n, 512, 512, 3)) * 255).astype(np.uint8)


def _speech(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _stream(audio: np.ndarray, chunk_s: float = 0.2):
    from digihuman.types import AudioChunk, SegmentEnd

    step = int(chunk_s * 16000)
    for i in range(0, len(audio), step):
        yield AudioChunk(audio[i : i + step])
    yield SegmentEnd()


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def cpu_table(models_dir: Path, version: str, n_frames: int) -> None:
    import torch

    from digihuman.engines.base import whole_audio
    from digihuman.engines.lipsync.musetalk.engine import MuseTalkEngine

    rows = []
    for batch in (1, 8):
        eng = MuseTalkEngine(models_dir=models_dir, version=version, device="cpu",
                             dtype="float32", batch_size=batch, silence_db=None)  # fmt: skip
        eng.load()
        t0 = time.perf_counter()
        prep = eng.prepare_boxes(_frames(2), 25.0, [BOX, BOX])
        prep_fps = 2 / (time.perf_counter() - t0)
        frames = max(batch, n_frames)
        audio = _speech(frames / 25.0)
        eng.reset_stats()
        t0 = time.perf_counter()
        out = list(eng.generate(prep, whole_audio(audio)))
        wall = time.perf_counter() - t0
        s = eng.stats
        n = len(out)

        def fps(k: str, s: dict[str, float] = s, n: int = n) -> str:
            return f"{n / s[k]:.2f}" if s[k] > 0 else "-"

        rows.append([str(batch), str(n), fps("features"), fps("unet"), fps("decode"),
                     fps("blend"), f"{n / wall:.2f}", f"{prep_fps:.2f}"])  # fmt: skip
    _table(
        f"MuseTalk {version} on CPU ({torch.get_num_threads()} threads), float32, frames/s",
        ["batch", "frames", "features", "unet", "decode", "blend/thread", "generate", "prepare"],
        rows,
    )


def segment_table(models_dir: Path, version: str, minutes: float, chunk_s: float = 2.0) -> None:
    """A long realtime segment: per-chunk cost and memory held, early against late.

    The first second is speech, the rest noise below ``silence_db`` (real audio for whisper;
    the frames come from the silent cache after the first ones, so what is timed is what grows
    with a segment if anything does: features, windows, the stream's buffers).
    """
    from digihuman.engines.lipsync.musetalk.engine import MuseTalkEngine
    from digihuman.types import AudioChunk, SegmentEnd

    eng = MuseTalkEngine(models_dir=models_dir, version=version, device="cpu",
                         dtype="float32", batch_size=8)  # fmt: skip
    eng.load()
    frames = (np.random.default_rng(0).random((2, 96, 96, 3)) * 255).astype(np.uint8)
    prep = eng.prepare_boxes(frames, 25.0, [(16, 12, 80, 88)] * 2)
    n = int(chunk_s * 16000)
    noise = (np.random.default_rng(2).uniform(-1, 1, n) * 9e-4).astype(np.float32)
    first = noise.copy()
    first[: min(n, 16000)] = _speech(1.0)[: min(n, 16000)]
    n_chunks = int(minutes * 60 / chunk_s)
    cpu: list[float] = []
    held: list[float] = []

    def chunks():
        for k in range(n_chunks):
            t0 = time.thread_time()
            yield AudioChunk(first if k == 0 else noise)
            cpu.append(time.thread_time() - t0)
            held.append(eng.stats["stream_bytes"])
        yield SegmentEnd()

    t0 = time.perf_counter()
    n_frames = sum(1 for _ in eng.generate(prep, chunks()))
    wall = time.perf_counter() - t0
    per_min = max(1, int(60 / chunk_s))
    rows = []
    for m in sorted({1, max(1, int(minutes) // 2), max(1, int(minutes))}):
        sel = slice((m - 1) * per_min, m * per_min)
        ms = 1000 * float(np.median(cpu[sel])) / (chunk_s * 25 / 8)
        rows.append([str(m), f"{ms:.1f}", f"{max(held[sel]) / 2**20:.2f}"])
    _table(f"MuseTalk {version} realtime, one {minutes:g}-minute segment in {chunk_s:g} s chunks "
           f"({n_frames} frames in {wall:.0f} s; CPU, main thread)",
           ["minute", "ms per 8-frame batch", "stream MiB held"], rows)  # fmt: skip


def gpu_table(models_dir: Path, version: str, seconds: float, quick: bool) -> None:
    import torch

    from digihuman.engines.lipsync.musetalk.engine import MuseTalkEngine

    name = torch.cuda.get_device_name(0)
    rows = []
    prep_rows = []
    stage_rows: list[list[str]] = []
    batches = (8,) if quick else (4, 8, 16, 32)
    for dtype in ("float16", "bfloat16"):
        for compile_ in (False, True):
            eng = MuseTalkEngine(models_dir=models_dir, version=version, device="cuda",
                                 dtype=dtype, compile=compile_, batch_size=8)  # fmt: skip
            comps = eng.load()
            n_src = 50
            frames = _frames(n_src)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            prep = eng.prepare_boxes(frames, 25.0, [BOX] * n_src)
            torch.cuda.synchronize()
            prep_rows.append(
                [dtype, "on" if compile_ else "off", f"{n_src / (time.perf_counter() - t0):.1f}"]
            )
            for batch in batches:
                eng2 = MuseTalkEngine(models_dir=models_dir, version=version, device="cuda",
                                      dtype=dtype, batch_size=batch, silence_db=None,
                                      components=comps)  # fmt: skip
                audio = _speech(seconds)
                list(eng2.generate(prep, _stream(_speech(2.0))))  # warm-up (and compile)
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                n = sum(1 for _ in eng2.generate(prep, _stream(audio)))
                torch.cuda.synchronize()
                wall = time.perf_counter() - t0
                peak = torch.cuda.max_memory_allocated() / 2**30
                rows.append([dtype, "on" if compile_ else "off", str(batch), f"{n / wall:.1f}",
                             f"{peak:.2f}"])  # fmt: skip
                if not compile_ and batch == batches[-1]:  # where the time goes (synchronised)
                    eng2.profile = True
                    eng2.reset_stats()
                    k = sum(1 for _ in eng2.generate(prep, _stream(audio)))
                    st = eng2.stats
                    stage_rows.append([dtype, str(batch)] + [
                        f"{k / st[s]:.0f}" if st[s] else "-"
                        for s in ("features", "unet", "decode", "blend")
                    ])  # fmt: skip
            del eng, comps
            torch.cuda.empty_cache()
    _table(f"MuseTalk {version} realtime loop on {name} (streamed 0.2 s chunks, {seconds:.0f} s "
           "of audio, blending included)", ["dtype", "compile", "batch", "frames/s",
                                             "peak GiB"], rows)  # fmt: skip
    _table(f"per-stage frames/s on {name} (synchronised; blend per worker thread)",
           ["dtype", "batch", "features", "unet", "decode", "blend"], stage_rows)  # fmt: skip
    _table(f"avatar preparation on {name} (crop, 2 VAE encodes, face parsing)",
           ["dtype", "compile", "frames/s"], prep_rows)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny random models (under a minute)")
    ap.add_argument("--models-dir", type=Path, help="an existing official layout")
    ap.add_argument("--version", default="v15", choices=["v1", "v15"])
    ap.add_argument("--frames", type=int, default=8, help="CPU: frames per measurement")
    ap.add_argument("--seconds", type=float, default=20.0, help="GPU: audio per measurement")
    ap.add_argument("--threads", type=int, help="CPU: torch intra-op threads (default: torch's)")
    ap.add_argument(
        "--segment-minutes",
        type=float,
        default=None,
        help="CPU: minutes of one realtime segment (default 10 quick, 60 full)",
    )
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from digihuman.engines.lipsync.musetalk import random_weights as RW

    tmp = None
    models_dir = args.models_dir
    if models_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="musetalk-bench-")
        models_dir = Path(tmp.name)
        size = "tiny" if args.quick else "full"
        t0 = time.perf_counter()
        RW.write_layout(models_dir, args.version, size=size)
        print(f"wrote {size} random weights ({args.version}) in {time.perf_counter() - t0:.1f}s")
    try:
        if torch.cuda.is_available():
            gpu_table(models_dir, args.version, 5.0 if args.quick else args.seconds, args.quick)
        else:
            cpu_table(models_dir, args.version, args.frames)
            minutes = args.segment_minutes or (10.0 if args.quick else 60.0)
            segment_table(models_dir, args.version, minutes)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
