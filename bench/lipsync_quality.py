"""Lip-sync quality measured on the OUTPUT video, two measures on the same decoded frames.

* **ours**: mouth opening (inner-lip gap 13-14 over the inter-ocular distance) from landmarks on
  every decoded frame of the encoded MP4, against the audio loudness envelope; the best-lag offset
  in frames (searched over ±10) and the Pearson correlation there. Goal: offset 0 ± 1, r ≥ 0.6.
* **outside** (the measure of issue [4b]): inner-lip gap 13-14 over the face height 10-152 from
  the face mesh run on each decoded frame, against the 25 fps RMS envelope of the audio: the
  Pearson r at lag 0, and the mean opening while speaking over the mean in silence. A frame is
  *speaking* when its RMS is within 20 dB of the loud frames (the 95th percentile of the
  envelope) and *silent* when it is 35 dB or more below them (or digital silence); frames in
  between (word edges, breath) count for r but for neither mean. Goals: ratio ≥ 1.5, r ≥ 0.6.
  The silent frames' spread of opening (std) on the decoded video is not 0 even for identical
  rendered frames (the encoder's noise moves the mesh by ~0.004); *still* is the exact check:
  the share of held-silence frames (silent, as are the 3 before them, since the lips take ~2
  frames to close after a word, and the one after, since they may open a frame ahead of a
  sound) that the engine rendered identical to the previous one, before
  encoding; 100 % when silence shows no blink and no jitter.

``--faces`` renders every face of the table (the bundled portraits, the test portraits under
tests/data/faces, and any ``--avatar``) with each voice (the bundled clip and, when the speech
extra is there, a piper voice) padded with 1 s of silence at both ends, and prints both measures.

Default avatar: skimage.data.astronaut() (public domain, NASA). Default speech: about 12 s of
English made now, offline, with espeak-ng (or ``--audio PATH``; ``--tts piper`` uses the piper
voice installed with the speech extra when present).

    python bench/lipsync_quality.py [--quick] [--avatar PATH] [--audio PATH] [--engine lite]
    python bench/lipsync_quality.py --video results/output/portrait_speech_en.mp4
    python bench/lipsync_quality.py --faces [--quick]
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


SPEAKING_DB = -20.0
"""A frame within this many dB of the loud frames (the envelope's 95th percentile) is speaking."""
SILENT_DB = -35.0
"""A frame this many dB or more below the loud frames is silent."""
PAD_S = 1.0
"""Silence added before and after each voice in ``--faces``."""


def face_height_opening(points: np.ndarray) -> float:
    """The outside measure's opening: inner-lip gap (13-14) over the face height (10-152)."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    return float(np.linalg.norm(p[14] - p[13]) / max(np.linalg.norm(p[152] - p[10]), 1e-6))


def speech_masks(env: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(speaking, silent) frame masks from the RMS envelope (see the module docstring)."""
    ref = float(np.percentile(env, 95))
    if ref <= 0:
        return np.zeros(len(env), bool), np.ones(len(env), bool)
    db = 20 * np.log10(np.maximum(env, 1e-9) / ref)
    return db >= SPEAKING_DB, db <= SILENT_DB


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def outside_measure(opening: np.ndarray, env: np.ndarray) -> dict[str, float]:
    """Issue [4b]'s measure on per-frame openings (gap / face height) and the RMS envelope."""
    n = min(len(opening), len(env))
    o, e = np.asarray(opening[:n], float), np.asarray(env[:n], float)
    speaking, silent = speech_masks(e)
    speak = float(o[speaking].mean()) if speaking.any() else float("nan")
    quiet = float(o[silent].mean()) if silent.any() else float("nan")
    return {
        "r": pearson(o, e),
        "speaking": speak,
        "silent": quiet,
        "ratio": speak / quiet if quiet > 0 else float("inf"),
        "silent_std": float(o[silent].std()) if silent.any() else float("nan"),
        "n_speaking": int(speaking.sum()),
        "n_silent": int(silent.sum()),
    }


def render_mp4(
    engine_name: str,
    frames: np.ndarray,
    fps_src: float,
    x: np.ndarray,
    out: Path,
    fps: float = 25.0,
    **engine_kwargs: object,
) -> tuple[float, np.ndarray]:
    """Prepare ``frames``, lip-sync them to ``x`` and encode the MP4 (with the audio) at ``out``.

    Returns the seconds taken and, per frame, whether the rendered frame (before encoding) is
    identical to the previous one (for the stillness of silence)."""
    from digihuman.engines.base import LIPSYNC, whole_audio
    from digihuman.media.video import VideoWriter

    engine = LIPSYNC.create(engine_name, fps=fps, **engine_kwargs)
    t = time.perf_counter()
    prepared = engine.prepare(frames, fps_src)
    same: list[bool] = []
    prev = None
    with VideoWriter(out, fps, audio=x) as writer:
        for frame in engine.generate(prepared, whole_audio(x)):
            writer.write(frame.image)
            same.append(prev is not None and np.array_equal(prev, frame.image))
            prev = frame.image
    return time.perf_counter() - t, np.array(same, bool)


SETTLE_FRAMES = 3
"""Frames into a silence after which the mouth must be still (the lips close over ~2 frames)."""


def stillness(same: np.ndarray, env: np.ndarray) -> float:
    """The share of held-silence frames (silent, as are the ``SETTLE_FRAMES`` before them and
    the one after: the 64 ms window may open the mouth a frame ahead of a sound) that repeat the
    previous frame exactly."""
    n = min(len(same), len(env))
    silent = speech_masks(env[:n])[1]
    held = silent.copy()
    for k in range(1, SETTLE_FRAMES + 1):
        held[k:] &= silent[:-k]
    held[:SETTLE_FRAMES] = False
    held[:-1] &= silent[1:]
    return float(same[:n][held].mean()) if held.any() else float("nan")


def measure_video(path: Path, x: np.ndarray, face: object | None = None) -> dict[str, object]:
    """Both measures on the decoded frames of the MP4 at ``path`` against the speech ``x``."""
    from digihuman.face import FaceAnalyzer
    from digihuman.face.geometry import mouth_opening
    from digihuman.media.video import read_video

    video, fps = read_video(path)
    fa = face if face is not None else FaceAnalyzer()
    points = [np.asarray(fa.analyze(img).points) for img in video]  # type: ignore[attr-defined]
    ours = np.array([mouth_opening(p) for p in points])
    outside = np.array([face_height_opening(p) for p in points])
    env = envelope(x, len(video), fps)
    lags = best_lag(ours, env)
    lag, r = max(lags, key=lambda lr: lr[1])
    return {
        "frames": len(video),
        "fps": fps,
        "ours_opening": ours,
        "lags": lags,
        "lag": lag,
        "r_best": r,
        "r0": dict(lags)[0],
        "outside_opening": outside,
        "outside": outside_measure(outside, env),
    }


FACES_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"


def bundled_faces() -> list[tuple[str, np.ndarray]]:
    """The bundled portrait (the astronaut) and every test portrait under tests/data/faces."""
    import skimage.data

    from digihuman.media.video import read_image

    faces = [("astronaut (bundled)", skimage.data.astronaut())]
    for p in sorted(FACES_DIR.glob("*.jpg")) + sorted(FACES_DIR.glob("*.png")):
        faces.append((p.name, read_image(p)))
    return faces


def voices(tmp: Path, quick: bool) -> list[tuple[str, np.ndarray]]:
    """The bundled clip and, when the speech extra is installed, a piper voice; padded."""
    from digihuman.media.audio import load_audio

    assets = Path(__file__).resolve().parents[1] / "src" / "digihuman" / "assets"
    pad = np.zeros(int(PAD_S * 16000), np.float32)
    x = load_audio(assets / "speech_en.wav")
    if quick:
        x = x[: 5 * 16000]
    out = [("speech_en.wav (espeak-ng)", np.r_[pad, x, pad])]
    try:
        y, name = make_speech(QUICK_TEXT if quick else TEXT, "piper", tmp)
        out.append((name.split(" ")[0], np.r_[pad, y, pad].astype(np.float32)))
    except Exception as e:  # the speech extra or its voice may be missing
        print(f"(no piper voice: {e})")
    return out


def faces_table(args: argparse.Namespace) -> None:
    from digihuman.face import FaceAnalyzer
    from digihuman.media.video import read_source

    faces = bundled_faces()
    for a in args.avatar or []:
        frames, _, _ = read_source(a)
        faces.append((Path(a).name, frames[0]))
    fa = FaceAnalyzer()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for vname, x in voices(tmp, args.quick):
            for fname, img in faces:
                out = tmp / "out.mp4"
                t, same = render_mp4(args.engine, img[None], 25.0, x, out, args.fps)
                m = measure_video(out, x, fa)
                o = m["outside"]
                o["still"] = stillness(same, envelope(x, len(same), args.fps))
                rest = face_height_opening(np.asarray(fa.analyze(img).points))
                rows.append((fname, vname, rest, m, o, t))
                print(f"  {fname} / {vname}: done in {t:.1f} s", flush=True)
    print()
    print(
        "| face | voice | source gap/height | ours: lag, r | outside: r | speaking / silent "
        "| ratio | silent std | still |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ok = True
    for fname, vname, rest, m, o, _ in rows:
        good = o["ratio"] >= 1.5 and o["r"] >= 0.6 and abs(m["lag"]) <= 1
        ok &= good
        print(
            f"| {fname} | {vname} | {rest:.3f} | {m['lag']:+d}, {m['r_best']:.2f} | {o['r']:.2f} "
            f"| {o['speaking']:.3f} / {o['silent']:.3f} | {o['ratio']:.2f} "
            f"| {o['silent_std']:.4f} | {o['still']:.0%} |" + ("" if good else " MISS")
        )
    print(f"goals (outside ratio ≥ 1.5, r ≥ 0.6; ours lag 0 ± 1): {'all met' if ok else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a ~5 s sentence")
    ap.add_argument("--avatar", action="append", help="portrait or video (default: astronaut)")
    ap.add_argument("--audio", help="speech audio (default: made now with --tts)")
    ap.add_argument("--tts", default="espeak-ng", choices=["espeak-ng", "piper"])
    ap.add_argument(
        "--sway", action="store_true", help="a swaying 5 s video avatar made from the portrait"
    )
    ap.add_argument("--faces", action="store_true", help="the table over every face and voice")
    ap.add_argument("--engine", default="lite")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--out", help="keep the rendered MP4 here")
    ap.add_argument("--video", help="measure this MP4 (e.g. from `digihuman render`) instead")
    args = ap.parse_args()
    if args.faces:
        faces_table(args)
        return

    import skimage.data

    from digihuman.media.audio import load_audio
    from digihuman.media.video import read_source

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.video:  # an MP4 made elsewhere (e.g. `digihuman render`): its own audio track
            x, source = load_audio(args.video), f"the audio track of {args.video}"
            out, avatar, t_render = Path(args.video), args.video, float("nan")
        else:
            if args.audio:
                x, source = load_audio(args.audio), args.audio
            else:
                x, source = make_speech(QUICK_TEXT if args.quick else TEXT, args.tts, tmp)
            if args.avatar:
                frames, fps_src, _ = read_source(args.avatar[0])
                avatar = args.avatar[0]
            else:
                frames, fps_src = skimage.data.astronaut()[None], 25.0
                avatar = "skimage astronaut"
            if args.sway:
                frames, avatar = sway(frames[0], 5.0), f"{avatar}, swaying 5 s video (±6°, ±8 px)"
            out = Path(args.out) if args.out else tmp / "out.mp4"
            t_render = render_mp4(args.engine, frames, fps_src, x, out, args.fps)[0]
        m = measure_video(out, x)
    opening, lags, lag, r, o = m["ours_opening"], m["lags"], m["lag"], m["r_best"], m["outside"]
    rows = [
        ("avatar", avatar),
        ("speech", f"{source}, {len(x) / 16000:.1f} s"),
        ("engine", f"{args.engine if not args.video else '-'}, {m['frames']} frames decoded"),
        ("render + encode", f"{t_render:.1f} s" if not args.video else "-"),
        ("mouth opening range", f"{opening.min():.3f} .. {opening.max():.3f} (gap / interocular)"),
        (
            "best lag (frames, + = video late)",
            f"{lag:+d}   goal 0 ± 1  {'ok' if abs(lag) <= 1 else 'MISS'}",
        ),
        ("correlation at best lag", f"{r:.3f}   goal ≥ 0.6  {'ok' if r >= 0.6 else 'MISS'}"),
        ("correlation at lag 0", f"{m['r0']:.3f}"),
        (
            "outside: r (gap/face height vs RMS)",
            f"{o['r']:.3f}   goal ≥ 0.6  {'ok' if o['r'] >= 0.6 else 'MISS'}",
        ),
        (
            "outside: speaking / silent opening",
            f"{o['speaking']:.3f} / {o['silent']:.3f} = {o['ratio']:.2f}   goal ≥ 1.5  "
            f"{'ok' if o['ratio'] >= 1.5 else 'MISS'}  ({o['n_speaking']} / {o['n_silent']} fr)",
        ),
        ("outside: silent opening std", f"{o['silent_std']:.4f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("lip-sync quality on the output video")
    print("-" * (width + 50))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("lag   r: " + "  ".join(f"{lg:+d}:{rr:.2f}" for lg, rr in lags if abs(lg) <= 4))


if __name__ == "__main__":
    main()
