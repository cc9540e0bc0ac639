"""Live rooms with the lite engine: start latency, frame-rate steadiness, rooms per machine.

Everything real on loopback: nginx + libnginx-mod-rtmp as the RTMP server, redis-server, the API
and one ``stream`` worker process (for the latency), PyAV pulling the stream back.

1. ``/human`` → first speaking frame: the request's start to (a) the reply, (b) the session's
   first tick of the utterance (the tick whose frame and audio go to the sinks; from the
   status' ``events``), (c) the first decoded frame with a moving mouth at an RTMP viewer
   (nginx relay + PyAV decode with ``nobuffer``; the audio starts loud at once).
2. Steadiness (in-process session → RTMP sink, speaking all the time): frames per second per
   1 s window at the sink (min/max), the pacer's drift against the wall clock, and the pulled
   stream's A/V end difference.
3. Rooms per machine: N sessions in one process (as one ``stream`` worker holds them), each
   speaking continuously with a room's default sinks (one encoder feeding the RTMP push, HLS
   and the recording, plus the WebRTC sink without viewers); a room "keeps 25 fps" when its
   ticks reached the sinks at 25 ± 0.5 frames/s (≥ 98 % of 1 s windows) with < 1 % repeated
   frames. CPU per room from the process CPU time; the load average is printed with each row.

    python bench/live.py [--quick] [--seconds 60] [--rooms 1,2,4,6,8]

The machine may be shared (the figures in the notes say so); the bench never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

SR = 16000
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Stack:
    """Processes started by the bench (each in its own process group), stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], name: str, env: dict[str, str] | None = None) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def nginx(self) -> int:
        port = free_port()
        d = self.tmp / "nginx"
        d.mkdir()
        (d / "nginx.conf").write_text(
            f"load_module {RTMP_MODULE};\ndaemon off; worker_processes 1; pid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n"
            "  application live { live on; record off; wait_key on; } } }\n"
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.start([nginx, "-p", str(d), "-e", f"{d}/error.log", "-c", "nginx.conf"], "nginx")
        wait_port(port)
        return port

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


class Puller:
    """Decode an RTMP stream: arrival time, pts and a mouth-region crop of each video frame."""

    def __init__(self, url: str, box: tuple[int, int, int, int] | None = None) -> None:
        self.url, self.box = url, box
        self.video: list[tuple[float, float, np.ndarray | None]] = []
        self.audio_end = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        import av

        opts = {"fflags": "nobuffer", "flags": "low_delay"}
        with contextlib.suppress(Exception), av.open(self.url, options=opts, timeout=10) as c:
            for pkt in c.demux():
                if self._stop.is_set():
                    return
                for f in pkt.decode():
                    if isinstance(f, av.VideoFrame):
                        crop = None
                        if self.box is not None:
                            x0, y0, x1, y1 = self.box
                            crop = f.to_ndarray(format="rgb24")[y0:y1, x0:x1].astype(np.int16)
                        self.video.append((time.time(), float(f.time), crop))
                    elif isinstance(f, av.AudioFrame):
                        self.audio_end = float(f.time) + f.samples / f.sample_rate

    def wait(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.video) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=5)


def speech() -> np.ndarray:
    from digihuman.media.audio import load_audio

    x = load_audio(resources.files("digihuman.assets") / "speech_en.wav")
    i = int(np.argmax(np.abs(x) > 0.05))  # start at the first loud sample
    return x[i:]


def mouth_box(prepared: Any) -> tuple[int, int, int, int]:
    m = prepared.arrays["landmarks"][0][[61, 291, 0, 17]]
    return (
        int(m[:, 0].min()) - 10,
        int(m[:, 1].min()) - 10,
        int(m[:, 0].max()) + 10,
        int(m[:, 1].max()) + 25,
    )


# ------------------------------------------------------------------------------ 1. latency


def latency(tmp: Path, rtmp_port: int, stack: Stack, tries: int) -> dict[str, Any]:
    import httpx

    from digihuman.engines.lipsync.lite import LiteEngine
    from digihuman.media.audio import save_wav

    root = tmp / "root"
    (root / "tests").mkdir(parents=True)
    save_wav(root / "tests" / "speech.wav", speech()[: 2 * SR], SR)
    rport, aport = free_port(), free_port()
    stack.start(
        [
            "redis-server",
            "--port",
            str(rport),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp),
        ],
        "redis",
    )
    wait_port(rport)
    env = dict(os.environ)
    env.update(
        DIGIHUMAN_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
        DIGIHUMAN_DATA_DIR=str(root),
        DIGIHUMAN_LIVE__RTMP_URL=f"rtmp://127.0.0.1:{rtmp_port}/live/{{zbjname}}",
        DIGIHUMAN_LIVE__RECORD="false",
        DIGIHUMAN_ROOMS__CLIPS="false",
        DIGIHUMAN_LOG_LEVEL="WARNING",
        DIGIHUMAN_JOBS__KINDS='["stream"]',
    )
    py = [sys.executable, "-m", "digihuman"]
    stack.start([*py, "worker", "stream"], "worker", env)
    stack.start([*py, "api", "--port", str(aport)], "api", env)
    wait_port(aport, 60)
    c = httpx.Client(base_url=f"http://127.0.0.1:{aport}", timeout=60)
    z = c.get("/create/zbj", params={"username": "bench"}).json()["message"]
    t = time.time()
    c.post(f"/v1/rooms/{z}/live").raise_for_status()  # opens the session (prepares the avatar)
    open_s = time.time() - t
    engine = LiteEngine()
    from digihuman.media.video import read_image

    prepared = engine.prepare(read_image(root / "data" / "portrait.jpg")[None], 25.0)
    puller = Puller(f"rtmp://127.0.0.1:{rtmp_port}/live/{z}", mouth_box(prepared))
    puller.wait(50)
    reply, tick, viewer = [], [], []
    for _ in range(tries):
        time.sleep(1.0)  # idle first: the mouth is still
        base = len(puller.video)
        ref = puller.video[-1][2]
        t0 = time.time()
        r = c.get("/human", params={"zbjname": z, "audioUrl": "tests/speech.wav"})
        reply.append(time.time() - t0)
        item = r.json()["id"]
        deadline = time.monotonic() + 5
        seen = None
        while time.monotonic() < deadline and seen is None:
            for at, _, crop in puller.video[base:]:
                if crop is not None and ref is not None and np.abs(crop - ref).mean() > 3.0:
                    seen = at
                    break
            time.sleep(0.005)
        st = c.get(f"/v1/rooms/{z}/live").json()
        started = [e["at"] for e in st.get("events", []) if e["id"] == item]
        if started:
            tick.append(started[0] - t0)
        if seen is not None:
            viewer.append(seen - t0)
        c.post(f"/v1/rooms/{z}/interrupt")
    puller.stop()

    def ms(xs: list[float]) -> str:
        if not xs:
            return "n/a"
        a = np.array(xs) * 1000
        return f"median {np.median(a):.0f} ms, max {a.max():.0f} ms (n={len(a)})"

    return {
        "open (first POST /live, avatar prepared)": f"{open_s * 1000:.0f} ms",
        "/human reply": ms(reply),
        "/human → first speaking tick at the sinks": ms(tick),
        "/human → mouth moving at an RTMP viewer": ms(viewer),
    }


# ---------------------------------------------------------------------------- 2./3. sessions


def run_rooms(
    n: int, seconds: float, rtmp_port: int, prepared: Any, engine: Any, tmp: Path
) -> dict[str, Any]:
    from digihuman.pipeline.live import LiveSession
    from digihuman.streaming.sinks import FileSink, HlsSink, LiveEncoder, RtmpSink
    from digihuman.streaming.webrtc import WebRtcSink

    class Clock:
        """A sink wrapper recording when each tick was handed to the room's sinks."""

        def __init__(self, inner: Any) -> None:
            self.inner, self.name = inner, inner.name
            self.outputs = inner.outputs
            self.times: list[float] = []

        def write(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
            self.times.append(time.monotonic())
            self.inner.write(image, audio, index)

        def health(self) -> dict[str, Any]:
            return dict(self.inner.health())

        def close(self) -> None:
            self.inner.close()

    talk = speech()
    sessions: list[Any] = []
    clocks: list[Any] = []
    for i in range(n):
        # a room's default sinks (as jobs/live.py builds them): the RTMP push, HLS and the
        # recording fed by one encoder, and the WebRTC viewer sink (no viewer connected)
        room = tmp / "rooms" / f"bench{n}-{i}"
        outputs = [
            RtmpSink(f"rtmp://127.0.0.1:{rtmp_port}/live/bench{n}-{i}"),
            HlsSink(room / "hls"),
            FileSink(room / "record.mp4"),
        ]
        sink = Clock(LiveEncoder(outputs, fps=25.0))
        sinks = [sink, WebRtcSink(fps=25.0)]
        s = LiveSession(engine, prepared, sinks=sinks, name=f"bench{i}")  # type: ignore[list-item]
        sessions.append(s)
        clocks.append(sink)
    puller = Puller(f"rtmp://127.0.0.1:{rtmp_port}/live/bench{n}-0")
    cpu0, t0 = time.process_time(), time.monotonic()
    for s in sessions:
        s.start()
        s.say(np.tile(talk, int(seconds / (len(talk) / SR)) + 2))
    time.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    stats = [s.status() for s in sessions]
    for s in sessions:
        s.stop()
    puller.stop()
    per_room = []
    for clk, st in zip(clocks, stats, strict=True):
        ts = np.array(clk.times)
        ts = ts[ts > ts[0] + 1.0] if len(ts) else ts  # after the first second (start-up)
        # the rate over every 1 s window (25 ticks), sliding by one tick
        rates = 25.0 / (ts[25:] - ts[:-25]) if len(ts) > 25 else np.zeros(1)
        counts = rates
        # the pacer against the wall clock: ticks handed out vs time taken, end to end
        allt = clk.times
        drift = (len(allt) - 1) / 25.0 - (allt[-1] - allt[0]) if len(allt) > 1 else 0.0
        span = ts[-1] - ts[0] if len(ts) > 1 else 1.0
        per_room.append(
            {
                "fps_min": float(counts.min()) if len(counts) else 0.0,
                "fps_max": float(counts.max()) if len(counts) else 0.0,
                "fps_p1": float(np.percentile(counts, 1)),
                "fps_p99": float(np.percentile(counts, 99)),
                "in_band": float(np.mean(np.abs(counts - 25.0) <= 0.5)),
                "fps_mean": (len(ts) - 1) / span,
                "repeated": st["repeated_frames"] / max(1, st["frames"]),
                "late": st["late_frames"] / max(1, st["frames"]),
                "skipped": st["skipped"] if "skipped" in st else st["skipped_ticks"],
                "drift_ms": drift * 1000,
                "dropped": sum(h.get("dropped", 0) for h in st["sinks"]),
            }
        )
    pulled = puller.video
    av_end = (puller.audio_end - (pulled[-1][1] + 0.04)) * 1000 if pulled else float("nan")
    ok = all(r["in_band"] >= 0.98 and r["repeated"] < 0.01 for r in per_room)
    lo = min(r["fps_p1"] for r in per_room)
    hi = max(r["fps_p99"] for r in per_room)
    return {
        "rooms": n,
        "ok": ok,
        "fps mean": f"{min(r['fps_mean'] for r in per_room):.3f}",
        "1 s windows in 25±0.5": f"{100 * min(r['in_band'] for r in per_room):.1f} %",
        "1 s windows p1-p99": f"{lo:.2f}-{hi:.2f}",
        "1 s windows min-max": f"{min(r['fps_min'] for r in per_room):.2f}-"
        f"{max(r['fps_max'] for r in per_room):.2f}",
        "repeated %": f"{100 * max(r['repeated'] for r in per_room):.2f}",
        "late %": f"{100 * max(r['late'] for r in per_room):.2f}",
        "skipped ticks": sum(r["skipped"] for r in per_room),
        "sink drops": sum(r["dropped"] for r in per_room),
        "pacer drift vs wall": f"{max(abs(r['drift_ms']) for r in per_room):.0f} ms",
        "CPU per room": f"{100 * cpu / wall / n:.0f} %",
        "pulled A/V end diff": f"{av_end:.0f} ms",
        "load": f"{os.getloadavg()[0]:.1f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s steadiness, rooms 1,2,4, 2 tries")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rooms", default="1,2,4,6,8")
    ap.add_argument("--tries", type=int, default=5)
    ap.add_argument("--only-rooms", action="store_true", help="skip the latency and steadiness")
    a = ap.parse_args()
    seconds = 10.0 if a.quick else a.seconds
    rooms = [1, 2, 4] if a.quick else [int(x) for x in a.rooms.split(",")]
    tries = 2 if a.quick else a.tries
    import skimage.data

    from digihuman.engines.lipsync.lite import LiteEngine

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f} (a shared machine?)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    stack = Stack(tmp)
    try:
        port = stack.nginx()
        engine = LiteEngine()
        prepared = engine.prepare(skimage.data.astronaut()[None], 25.0)
        if not a.only_rooms:
            print("\n## /human → first speaking frame (API + stream worker + Redis + nginx)")
            for k, v in latency(tmp, port, stack, tries).items():
                print(f"| {k} | {v} |")
            print(f"\n## steadiness over {seconds:g} s, one room speaking, 512x512")
            one = run_rooms(1, seconds, port, prepared, engine, tmp)
            print(json.dumps(one, indent=1))
        print(f"\n## rooms in one process ({seconds / 2:g} s each, all speaking)")
        cols = [
            "rooms",
            "ok",
            "fps mean",
            "1 s windows in 25±0.5",
            "1 s windows p1-p99",
            "repeated %",
            "late %",
            "CPU per room",
            "sink drops",
            "load",
        ]
        print("| " + " | ".join(cols) + " |")
        for n in rooms:
            r = run_rooms(n, seconds / 2, port, prepared, engine, tmp)
            print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
