"""Interview-room figures ([5/7]). Section ``rooms``: ``/create/zbjv2`` latency to the answer and
to all clips ready.

    .venv/bin/python bench/interview.py [--quick] [--count 5] [--runs 3] [--tts auto]

Starts a throwaway redis-server, one TTS and one render worker process (lite lip-sync engine,
the bundled portrait) and an API process, all as ``digihuman serve`` would run them, then per
run: GET /create/zbjv2 (timed to the JSON answer), then GET /v1/rooms/<zbjname> until the room
is ready (every clip's wav and mp4 written). ``--quick``: 2 questions, 1 run. Other sections
(expression analysis, uploads) belong to the answers/feedback features and are added beside it.

Section ``expression`` (``--sections expression``): expression analysis frames/s on this CPU
(the fer engine: face mesh, FER, head pose, smile, eye contours) on a 720p answer video made of a
talking head rendered by the project (lite engine, the bundled portrait) looped to 60 s
(``--quick``: 20 s): the engine alone on decoded frames with every measure, and the whole
analysis of the file (decode + 2 full and 15 eye samples per second + aggregation).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from digihuman.config import RedisSettings
from digihuman.jobs.supervisor import free_port, start_embedded_redis


def _env(url: str, root: Path, tts: str, lipsync: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DIGIHUMAN_REDIS_URL=url,
        DIGIHUMAN_DATA_DIR=str(root),
        DIGIHUMAN_TTS__ENGINE=tts,
        DIGIHUMAN_LIPSYNC__ENGINE=lipsync,
        DIGIHUMAN_LOG_LEVEL="WARNING",
        DIGIHUMAN_API__RATE_LIMIT_PER_MINUTE="0",
        DIGIHUMAN_ROOMS__TICK_S="1.0",
    )
    return env


def bench_rooms(args: argparse.Namespace, tmp: Path) -> None:
    import httpx

    rs = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    redis_proc, url = start_embedded_redis(rs, tmp / "redis")
    root = tmp / "root"
    env = _env(url, root, args.tts, args.lipsync)
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs = open(tmp / "procs.log", "wb")  # noqa: SIM115  # closed below
    try:
        for kind in ("tts", "render"):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "digihuman", "worker", kind],
                    env=env,
                    stdout=logs,
                    stderr=subprocess.STDOUT,
                )
            )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "digihuman", "api", "--port", str(port)],
                env=env,
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=120) as c:
            deadline = time.monotonic() + 120
            while True:  # ready: API up and a live worker of each kind
                try:
                    r = c.get("/readyz")
                    w = r.json().get("workers", {})
                    if w.get("tts") and w.get("render"):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start; see {logs.name}")
                time.sleep(0.2)
            answer: list[float] = []
            clips: list[float] = []
            audio_s: list[float] = []
            job = "Java开发工程师"
            for run in range(args.runs + 1):  # run 0 warms the workers (engines, portrait)
                t0 = time.perf_counter()
                r = c.get(
                    "/create/zbjv2",
                    params={"username": "bench", "job": job, "count": args.count, "seed": run},
                )
                t_answer = time.perf_counter() - t0
                r.raise_for_status()
                z = r.json()["zbjname"]
                room: dict[str, Any] = {}
                while True:
                    room = c.get(f"/v1/rooms/{z}").json()
                    if room["status"] != "created":
                        break
                    if time.perf_counter() - t0 > 1800:
                        raise RuntimeError(f"room {z} not ready after 30 min")
                    time.sleep(0.05)
                t_clips = time.perf_counter() - t0
                failed = [q["clip"]["error"] for q in room["questions"] if q["clip"]["error"]]
                if failed:
                    raise RuntimeError(f"clips failed: {failed[:2]}")
                secs = 0.0
                for q in room["questions"]:
                    import wave

                    with wave.open(str(root / q["clip"]["audio"])) as wf:
                        secs += wf.getnframes() / wf.getframerate()
                tag = "warm-up" if run == 0 else f"run {run}"
                print(
                    f"  {tag}: answer {t_answer * 1000:.0f} ms, all clips {t_clips:.1f} s, "
                    f"{secs:.1f} s of speech",
                    file=sys.stderr,
                )
                if run:
                    answer.append(t_answer)
                    clips.append(t_clips)
                    audio_s.append(secs)
        la = os.getloadavg()[0]
        print(
            f"/create/zbjv2, {args.count} questions, tts={args.tts}, lip-sync={args.lipsync}, "
            f"{args.runs} runs after a warm-up, {os.cpu_count()} cores, load {la:.1f}"
        )
        print("| figure | median | min | max |")
        print("| --- | ---: | ---: | ---: |")
        for name, xs, unit in [
            ("to the answer (JSON)", [a * 1000 for a in answer], "ms"),
            ("to all clips ready", clips, "s"),
            ("speech in the clips", audio_s, "s"),
        ]:
            fmt = "{:.0f} " + unit if unit == "ms" else "{:.1f} " + unit
            print(
                f"| {name} | {fmt.format(statistics.median(xs))} | {fmt.format(min(xs))} | "
                f"{fmt.format(max(xs))} |"
            )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()
        redis_proc.terminate()
        redis_proc.wait(timeout=30)


def _answer_video(tmp: Path, seconds: float) -> Path:
    """A 1280x720 answer video: the lite-rendered talking portrait, looped to ``seconds``."""
    import cv2
    import numpy as np

    from digihuman.media.video import iter_video, write_video

    assets = Path(__file__).resolve().parents[1] / "src" / "digihuman" / "assets"
    talking = tmp / "talking.mp4"
    cmd = [sys.executable, "-m", "digihuman", "render", "--avatar", str(assets / "portrait.jpg")]
    cmd += ["--audio", str(assets / "speech_en.wav"), "-o", str(talking), "-q"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    frames = list(iter_video(talking))
    canvas = np.full((720, 1280, 3), 90, np.uint8)

    def place(f: np.ndarray) -> np.ndarray:
        out = canvas.copy()
        big = cv2.resize(f, (620, 620))
        out[60:680, 330:950] = big
        return out

    n = int(seconds * 25)
    out = tmp / "answer.mp4"
    write_video(out, (place(frames[i % len(frames)]) for i in range(n)), 25)
    return out


def bench_expression(args: argparse.Namespace, tmp: Path) -> None:
    from digihuman.engines.expression import AnalysisOptions, analyze_video
    from digihuman.engines.expression.fer import FERExpression
    from digihuman.engines.expression.sampling import sample_video

    seconds = 20.0 if args.quick else 60.0
    video = _answer_video(tmp, seconds)
    engine = FERExpression()
    full = list(sample_video(video, sample_fps=2, eye_fps=0))  # decoded beforehand
    list(engine.analyze(full[:4]))  # warm-up
    t0 = time.perf_counter()
    n = sum(1 for _ in engine.analyze(full))
    engine_fps = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    s = analyze_video(engine, video, options=AnalysisOptions())
    wall = time.perf_counter() - t0
    la = os.getloadavg()[0]
    print(
        f"expression analysis, fer engine, {seconds:.0f} s 1280x720 25 fps answer video, "
        f"{os.cpu_count()} cores, load {la:.1f}"
    )
    print("| figure | value |")
    print("| --- | ---: |")
    print(f"| engine frames/s, every measure (2/s samples, decoded first) | {engine_fps:.0f} |")
    per_s = s["analysis"]["sampled_frames"] / wall
    print(f"| whole file: sampled frames/s (decode + 2 + 15 per s) | {per_s:.0f} |")
    print(f"| whole file: video seconds per second | {seconds / wall:.1f} |")
    print(f"| a 10-minute answer (extrapolated) | {600 / (seconds / wall):.0f} s |")
    print(
        f"| result: face_visible / looking / blinks per min | {s['face_visible']} / "
        f"{s['looking_at_camera']} / {s['blinks_per_minute']} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 questions, 1 run")
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--tts", default="auto", help="TTS engine of the worker (default auto)")
    ap.add_argument("--lipsync", default="lite")
    ap.add_argument("--sections", default="rooms,expression", help="comma-separated sections")
    args = ap.parse_args()
    args.count = args.count or (2 if args.quick else 5)
    args.runs = args.runs or (1 if args.quick else 3)
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        if "rooms" in sections:
            bench_rooms(args, Path(tmp))
        if "expression" in sections:
            bench_expression(args, Path(tmp))


if __name__ == "__main__":
    main()
