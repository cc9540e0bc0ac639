"""Lite lip-sync engine speed on ONE core: frames/s at 512x512 (warp + interior + blend + blinks,
no encode), the audio analysis alone, and avatar preparation.

Pinned to one CPU with ``os.sched_setaffinity`` and ``cv2.setNumThreads(1)`` (BLAS/OpenMP
threads set to 1 before numpy loads). Prints a table.

    python bench/lite_engine.py [--quick] [--seconds 10] [--avatar PATH] [--audio PATH]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

TEXT = (
    "Good morning, and thank you for joining this interview. Could you tell me about a project "
    "you are proud of? What was the hardest problem, and how did you solve it? Take your time; "
    "there is no rush, and we can come back to any question later."
)


def pin_one_core() -> str:
    import cv2

    cv2.setNumThreads(1)
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    except (AttributeError, OSError):  # not Linux
        return "unpinned"


def best_of(k: int, fn: Callable[[], int]) -> tuple[int, float]:
    """(items, seconds) of the fastest of ``k`` runs: the machine is shared, the best run is the
    least disturbed one."""
    best = (0, float("inf"))
    for _ in range(k):
        t = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t
        if dt < best[1]:
            best = (n, dt)
    return best


def speech(seconds: float, audio: str | None) -> np.ndarray:
    from digihuman.media.audio import load_audio

    if audio:
        x = load_audio(audio)
    else:
        if not shutil.which("espeak-ng"):
            raise SystemExit("espeak-ng not found: pass --audio PATH or install espeak-ng")
        with tempfile.TemporaryDirectory() as d:
            wav = Path(d) / "speech.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True)
            x = load_audio(wav)
    reps = int(np.ceil(seconds * 16000 / len(x)))
    return np.tile(x, reps)[: int(seconds * 16000)].astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 s of audio, a 2 s video avatar")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio length")
    ap.add_argument("--avatar", help="a portrait (default: skimage.data.astronaut(), 512x512)")
    ap.add_argument("--audio", help="speech audio (default: espeak-ng English, made now)")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    video_s = 2.0 if args.quick else 10.0
    pinned = pin_one_core()

    import cv2
    import skimage.data

    from digihuman.engines.base import whole_audio
    from digihuman.engines.lipsync.lite import LiteEngine

    if args.avatar:
        from digihuman.media.video import read_image

        photo = read_image(args.avatar)
    else:
        photo = skimage.data.astronaut()
    h, w = photo.shape[:2]
    x = speech(seconds, args.audio)
    engine = LiteEngine(fps=25.0, blink=True)
    rows: list[tuple[str, str, str]] = []

    t = time.perf_counter()
    prepared = engine.prepare(photo[None], 25.0)
    rows.append(
        ("prepare photo (face + landmarks, first call)", f"{time.perf_counter() - t:.3f} s", "")
    )

    t = time.perf_counter()
    params = list(engine.mouth_params(whole_audio(x)))
    dt = time.perf_counter() - t
    rows.append(("audio → mouth params", f"{len(params) / dt:,.0f} frames/s", f"{len(params)} fr"))

    list(engine.generate(prepared, whole_audio(x[:16000])))  # warm the per-frame rig cache
    n, dt = best_of(3, lambda: sum(1 for _ in engine.generate(prepared, whole_audio(x))))
    rows.append(
        (f"generate {w}x{h} (audio+warp+blend+blink)", f"{n / dt:,.0f} frames/s", f"{n} fr")
    )
    open_frames = sum(p.openness > 0 for p in params)
    rows.append(("  of which mouth open", f"{open_frames / max(n, 1):.0%}", ""))

    m = 500 if args.quick else 2000

    def render_open() -> int:
        for i in range(m):
            engine.render(prepared, 0, 0.3 + 0.7 * (i % 7) / 6, 0.5 * np.sin(i), 0.0)
        return m

    m, dt = best_of(3, render_open)
    rows.append((f"render only, mouth always open {w}x{h}", f"{m / dt:,.0f} frames/s", f"{m} fr"))

    # a video avatar: the photo swaying (every frame has its own landmarks and rig)
    nv = int(video_s * 25)
    frames = np.stack(
        [
            cv2.warpAffine(
                photo,
                cv2.getRotationMatrix2D((w / 2, h / 2), 5.0 * np.sin(i / 9.0), 1.0),
                (w, h),
                borderMode=cv2.BORDER_REFLECT,
            )
            for i in range(nv)
        ]
    )
    t = time.perf_counter()
    video = engine.prepare(frames, 25.0)
    dt = time.perf_counter() - t
    rows.append((f"prepare video avatar {video_s:.0f} s", f"{nv / dt:,.1f} frames/s", f"{nv} fr"))
    engine = LiteEngine(fps=25.0, blink=True, cache_frames=0)
    n, dt = best_of(1, lambda: sum(1 for _ in engine.generate(video, whole_audio(x))))
    rows.append(
        ("generate on the video avatar (rig per frame)", f"{n / dt:,.0f} frames/s", f"{n} fr")
    )

    width = max(len(r[0]) for r in rows)
    print(f"lite engine, one core ({pinned}), cv2 threads {cv2.getNumThreads()}, best of 3 runs")
    print(f"{'measure':<{width}}  {'result':>18}  note")
    print("-" * (width + 30))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")


if __name__ == "__main__":
    main()
