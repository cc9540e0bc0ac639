"""Lip-sync quality measured on the OUTPUT video: mouth opening (landmarks on every decoded frame
of the encoded MP4) against the audio loudness envelope. Reports the best-lag offset in frames
(searched over ±10) and the Pearson correlation there. Goal: offset 0 ± 1, correlation ≥ 0.6.

Default avatar: skimage.data.astronaut() (public domain, NASA). Default speech: about 12 s of
English made now, offline, with espeak-ng (or ``--audio PATH``; ``--tts piper`` uses the piper
voice installed with the speech extra when present).

    python bench/lipsync_quality.py [--quick] [--avatar PATH] [--audio PATH] [--engine lite]
    python bench/lipsync_quality.py --video results/output/portrait_speech_en.mp4
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

TEXT = (
    "Hello, and welcome to this interview. My name is Alex, and I will ask you a few questions "
    "today. First, could you tell me about yourself? What do you enjoy most about your work? "
    "Take a moment to think, and answer whenever you are ready."
)
QUICK_TEXT = "Hello, and welcome. Could you tell me about yourself, and what you enjoy most?"


def make_speech(text: str, tts: str, tmp: Path) -> tuple[np.ndarray, str]:
    from digihuman.media.audio import load_audio

    wav = tmp / "speech.wav"
    if tts == "piper":
        from digihuman.engines.base import TTS

        chunks = list(TTS.create("piper").synthesize(text))
        rate = chunks[0].sample_rate
        x = np.concatenate([c.samples for c in chunks])
        from digihuman.media.audio import resample

        return resample(x, rate, 16000), "piper (digihuman TTS engine)"
    if not shutil.which("espeak-ng"):
        raise SystemExit("espeak-ng not found: pass --audio PATH or install espeak-ng")
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text], check=True)
    return load_audio(wav), "espeak-ng"


def sway(photo: np.ndarray, seconds: float, fps: float = 25.0) -> np.ndarray:
    """A video avatar: the photo rocking ±6° and drifting ±8 px (every frame differs)."""
    import cv2

    h, w = photo.shape[:2]
    out = []
    for i in range(int(seconds * fps)):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0 * np.sin(i / 8.0), 1.0)
        m[0, 2] += 8.0 * np.sin(i / 11.0)
        out.append(cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def envelope(x: np.ndarray, n: int, fps: float) -> np.ndarray:
    from digihuman.timing import frame_span

    out = np.zeros(n)
    for i in range(n):
        a, b = frame_span(i, 16000, fps)
        seg = x[a:b]
        out[i] = np.sqrt(np.mean(seg * seg)) if len(seg) else 0.0
    return out


def best_lag(mouth: np.ndarray, env: np.ndarray, max_lag: int = 10) -> list[tuple[int, float]]:
    """Pearson r of mouth[i] against env[i - lag] for each lag (lag > 0: the video is late)."""
    out = []
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = mouth[lag:], env[: len(env) - lag]
        else:
            a, b = mouth[:lag], env[-lag:]
        r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else 0.0
        out.append((lag, r))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a ~5 s sentence")
    ap.add_argument("--avatar", help="portrait or video (default: skimage astronaut)")
    ap.add_argument("--audio", help="speech audio (default: made now with --tts)")
    ap.add_argument("--tts", default="espeak-ng", choices=["espeak-ng", "piper"])
    ap.add_argument(
        "--sway", action="store_true", help="a swaying 5 s video avatar made from the portrait"
    )
    ap.add_argument("--engine", default="lite")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--out", help="keep the rendered MP4 here")
    ap.add_argument("--video", help="measure this MP4 (e.g. from `digihuman render`) instead")
    args = ap.parse_args()

    import skimage.data

    from digihuman.engines.base import LIPSYNC, whole_audio
    from digihuman.face import FaceAnalyzer
    from digihuman.face.geometry import mouth_opening
    from digihuman.media.audio import load_audio
    from digihuman.media.video import VideoWriter, read_source, read_video

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.video:  # an MP4 made elsewhere (e.g. `digihuman render`): its own audio track
            x, source = load_audio(args.video), f"the audio track of {args.video}"
            out, avatar, n, t_render = Path(args.video), args.video, -1, float("nan")
        else:
            if args.audio:
                x, source = load_audio(args.audio), args.audio
            else:
                x, source = make_speech(QUICK_TEXT if args.quick else TEXT, args.tts, tmp)
            if args.avatar:
                frames, fps_src, _ = read_source(args.avatar)
                avatar = args.avatar
            else:
                frames, fps_src = skimage.data.astronaut()[None], 25.0
                avatar = "skimage astronaut"
            if args.sway:
                frames, avatar = sway(frames[0], 5.0), f"{avatar}, swaying 5 s video (±6°, ±8 px)"
            engine = LIPSYNC.create(args.engine, fps=args.fps)
            t = time.perf_counter()
            prepared = engine.prepare(frames, fps_src)
            out = Path(args.out) if args.out else tmp / "out.mp4"
            n = 0
            with VideoWriter(out, args.fps, audio=x) as writer:
                for frame in engine.generate(prepared, whole_audio(x)):
                    writer.write(frame.image)
                    n += 1
            t_render = time.perf_counter() - t
        video, fps_out = read_video(out)
        face = FaceAnalyzer()
        opening = np.array([mouth_opening(face.analyze(img)) for img in video])
        args.fps = fps_out
    env = envelope(x, len(opening), args.fps)
    lags = best_lag(opening, env)
    lag, r = max(lags, key=lambda lr: lr[1])
    r0 = dict(lags)[0]
    rows = [
        ("avatar", avatar),
        ("speech", f"{source}, {len(x) / 16000:.1f} s"),
        ("engine", f"{args.engine if n >= 0 else '-'}, {len(video)} frames decoded"),
        ("render + encode", f"{t_render:.1f} s" if n >= 0 else "-"),
        ("mouth opening range", f"{opening.min():.3f} .. {opening.max():.3f} (gap / interocular)"),
        (
            "best lag (frames, + = video late)",
            f"{lag:+d}   goal 0 ± 1  {'ok' if abs(lag) <= 1 else 'MISS'}",
        ),
        ("correlation at best lag", f"{r:.3f}   goal ≥ 0.6  {'ok' if r >= 0.6 else 'MISS'}"),
        ("correlation at lag 0", f"{r0:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("lip-sync quality on the output video")
    print("-" * (width + 50))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("lag   r: " + "  ".join(f"{lg:+d}:{rr:.2f}" for lg, rr in lags if abs(lg) <= 4))


if __name__ == "__main__":
    main()
