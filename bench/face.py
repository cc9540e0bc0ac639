"""Face module speed and stability: detection, landmarks, and tracking a 10 s 25 fps video.

Run: .venv/bin/python bench/face.py [--quick] [--threads N]

The portrait is skimage's astronaut (NASA photo of Eileen Collins, public domain). Videos are
synthetic: the photo with a moving, rotating head, placed on a 1280x720 canvas, encoded to
H.264 and decoded again (as an avatar video would be). Prints one table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from digihuman.face import FaceAnalyzer
from digihuman.face import geometry as g
from digihuman.media.video import read_video, write_video


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def head_video(photo: np.ndarray, n: int, size: tuple[int, int], still: bool) -> list[np.ndarray]:
    w, h = size
    frames = []
    for k in range(n):
        t = k / 25.0
        ang = 0.0 if still else 10 * np.sin(2 * np.pi * 0.4 * t)
        dx = 0.0 if still else 40 * np.sin(2 * np.pi * 0.25 * t)
        m = cv2.getRotationMatrix2D((224, 130), ang, 1.0)
        m[0, 2] += (w - 512) / 2 + dx
        m[1, 2] += (h - 512) / 2
        frames.append(cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s videos instead of 10 s")
    ap.add_argument("--threads", type=int, default=None, help="interpreter threads")
    args = ap.parse_args()
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut())
    seconds = 2 if args.quick else 10
    n = seconds * 25
    repeat = 3 if args.quick else 10

    t0 = time.perf_counter()
    fa = FaceAnalyzer(num_threads=args.threads)
    load_s = time.perf_counter() - t0
    rows: list[tuple[str, str]] = [("load models", f"{load_s * 1000:.0f} ms")]

    rows.append(
        ("detect, 512x512 portrait", f"{timeit(lambda: fa.detect(photo), repeat) * 1e3:.1f} ms")
    )
    rows.append(
        ("analyze, 512x512 portrait", f"{timeit(lambda: fa.analyze(photo), repeat) * 1e3:.1f} ms")
    )
    canvas = np.full((1200, 1600, 3), 128, np.uint8)
    canvas[300:460, 900:1060] = cv2.resize(photo, (160, 160), interpolation=cv2.INTER_AREA)
    rows.append(
        (
            "analyze, 30 px face in 1600x1200 (tiled)",
            f"{timeit(lambda: fa.analyze(canvas), 1) * 1e3:.0f} ms",
        )
    )
    box = fa.detect(photo)[0]
    rows.append(
        ("landmarks from a box", f"{timeit(lambda: fa.landmarks(photo, box), repeat) * 1e3:.1f} ms")
    )

    with tempfile.TemporaryDirectory() as tmp:
        for label, size, still in (
            ("moving head", (1280, 720), False),
            ("still head", (1280, 720), True),
        ):
            path = Path(tmp) / "v.mp4"
            write_video(path, head_video(photo, n, size, still), 25)
            t = time.perf_counter()
            frames, fps = read_video(path)
            read_s = time.perf_counter() - t
            t = time.perf_counter()
            lms = fa.track(frames, fps=fps)
            track_s = time.perf_counter() - t
            raw = fa.track(frames, fps=fps, smooth=False)
            pts = np.stack([lm.points for lm in lms])
            raw_pts = np.stack([lm.points for lm in raw])
            tag = f"{seconds} s {size[0]}x{size[1]} {label}"
            rows.append((f"decode {tag}", f"{n / read_s:.0f} frames/s"))
            rows.append((f"track {tag}", f"{n / track_s:.0f} frames/s ({track_s:.2f} s)"))
            rows.append(
                (f"prepare (decode + track) {tag}", f"{n / (read_s + track_s):.0f} frames/s")
            )
            if still:
                jit = np.linalg.norm(np.diff(pts, axis=0), axis=2).mean()
                jit_raw = np.linalg.norm(np.diff(raw_pts, axis=0), axis=2).mean()
                rows.append(
                    ("still-head jitter, smoothed / raw", f"{jit:.3f} px / {jit_raw:.3f} px")
                )
            else:
                lag = np.linalg.norm(pts - raw_pts, axis=2).mean()
                iod = statistics.median(g.interocular(lm) for lm in raw)
                rows.append(
                    ("moving head: smoothed vs raw", f"{lag:.2f} px (interocular {iod:.0f} px)")
                )

    width = max(len(r[0]) for r in rows)
    print(f"face bench ({'quick' if args.quick else 'full'}; threads={args.threads or 'auto'})")
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 24}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
