"""Whole `render` speed as a multiple of real time, and avatar preparation frames/s.

Prints a table. Default: the bundled portrait with the bundled 10.6 s speech clip, and a 10 s
25 fps video avatar made from the portrait (a swaying head) for preparation.

    python bench/render_speed.py [--quick] [--engine lite]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "src" / "digihuman" / "assets"


def sway_video(portrait: np.ndarray, path: Path, seconds: float, fps: float = 25.0) -> Path:
    import cv2

    from digihuman.media.video import VideoWriter

    h, w = portrait.shape[:2]
    with VideoWriter(path, fps) as writer:
        for i in range(int(seconds * fps)):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), 5.0 * np.sin(i / 9.0), 1.0)
            m[0, 2] += 8 * np.sin(i / 13.0)
            writer.write(cv2.warpAffine(portrait, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a 4 s video avatar instead of 10 s")
    ap.add_argument("--engine", default="lite")
    args = ap.parse_args()

    from PIL import Image

    from digihuman.avatar.prepare import prepare
    from digihuman.config import load_settings
    from digihuman.media.audio import load_audio
    from digihuman.pipeline.engines import create_lipsync
    from digihuman.pipeline.render import render

    settings = load_settings()
    engine = create_lipsync(settings, args.engine)
    portrait = np.asarray(Image.open(ASSETS / "portrait.jpg").convert("RGB"))
    audio = load_audio(ASSETS / "speech_en.wav")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # prepare the still
        t = time.perf_counter()
        prepared = prepare(engine, ASSETS / "portrait.jpg", fps=25.0)
        rows.append(("prepare photo 512x512", f"{time.perf_counter() - t:.2f} s", "1 frame"))
        # whole render (prepared still + encode + mux)
        res = render(engine, prepared, audio, tmp / "out.mp4")
        rows.append(
            (
                f"render {len(audio) / 16000:.1f} s speech (encode incl.)",
                f"{res.elapsed_s:.2f} s",
                f"{res.realtime_factor:.1f}x real time, "
                f"{res.n_frames / res.elapsed_s:.0f} frames/s",
            )
        )
        # prepare + render from a video avatar
        seconds = 4.0 if args.quick else 10.0
        vid = sway_video(portrait, tmp / "sway.mp4", seconds)
        t = time.perf_counter()
        pv = prepare(engine, vid, fps=25.0)
        dt = time.perf_counter() - t
        rows.append(
            (
                f"prepare {seconds:.0f} s video avatar 512x512",
                f"{dt:.2f} s",
                f"{pv.n_frames / dt:.0f} frames/s (decode incl.)",
            )
        )
        res = render(engine, pv, audio, tmp / "out2.mp4")
        rows.append(
            (
                "render from the video avatar",
                f"{res.elapsed_s:.2f} s",
                f"{res.realtime_factor:.1f}x real time",
            )
        )
    w = max(len(r[0]) for r in rows)
    print(f"{'measure (' + args.engine + ')':<{w}}  {'time':>9}  result")
    for name, t_, res_ in rows:
        print(f"{name:<{w}}  {t_:>9}  {res_}")


if __name__ == "__main__":
    main()
