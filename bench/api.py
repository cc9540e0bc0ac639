"""API latency under load, /tts → file-ready latency and the /asr round trip.

Run: .venv/bin/python bench/api.py [--quick] [--rate 200] [--fake]

Starts what ``digihuman serve`` starts, as real processes: an embedded redis-server (loopback,
append-only file), the API (uvicorn, one process) and, for the speech figures, one TTS and one
ASR worker with the default offline engines (Piper for English, faster-whisper "base" int8;
``--fake`` uses the fake engines instead).

1. Open-loop load at ``--rate`` requests/s (goal: p99 <= 20 ms) on ``/create/zbj`` (validation
   and a JSON answer, no Redis: the cheapest class) and on the enqueue endpoints ``/tts`` and
   ``POST /v1/tts`` (one Redis transaction each). Workers are not running during this phase
   (they would compete for the same cores), so it measures the API alone.
2. ``/tts`` → file ready: the seed's way (the client polls for the file every 2 ms) and with
   ``wait=``, for a short sentence.
3. ``/asr?url=tests/<that file>.wav`` round trip.

The last column is the share of requests the application itself answered within 20 ms (its own
latency histogram), which separates the API's work from scheduling noise on a busy machine.
Latency is measured per request from the moment it is sent, over 64 keep-alive connections with
a minimal asyncio HTTP/1.1 client; the load generator runs on the same machine, so the API
shares the cores with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from digihuman.config import RedisSettings
from digihuman.jobs.supervisor import free_port, start_embedded_redis

SENTENCE = "Hello, and welcome to the interview."


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class RawPool:
    """A tiny HTTP/1.1 keep-alive client on asyncio streams: far less client CPU than httpx,
    so that on a small machine the figures describe the server rather than the load generator."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self) -> None:
        for _ in range(self.size):
            self.free.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def request(self, raw: bytes) -> int:
        reader, writer = await self.free.get()
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            return status
        finally:
            self.free.put_nowait((reader, writer))

    async def close(self) -> None:
        while not self.free.empty():
            _, w = self.free.get_nowait()
            w.close()


def raw_request(method: str, path: str, body: bytes | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


async def load(
    port: int, raw: bytes, rate: float, seconds: float
) -> tuple[list[float], dict[int, int], float]:
    """Open loop: one request every 1/rate s regardless of answers. (latencies, codes, rps)."""
    lat: list[float] = []
    codes: dict[int, int] = {}
    pool = RawPool("127.0.0.1", port, 64)
    await pool.open()

    async def one() -> None:
        t = time.perf_counter()
        status = await pool.request(raw)
        lat.append(time.perf_counter() - t)
        codes[status] = codes.get(status, 0) + 1

    for _ in range(int(rate)):  # warm up: about a second of requests, one at a time
        await one()
    lat.clear()
    codes.clear()
    n = int(rate * seconds)
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    achieved = n / (time.perf_counter() - t0)
    await pool.close()
    return lat, codes, achieved


def server_within(base: str, route: str, le: str = "0.02") -> tuple[float, float]:
    """(requests answered within ``le`` s, all requests) for ``route``, from the API's own
    latency histogram: time spent inside the application, without client and socket queues."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    within = total = 0.0
    for line in text.splitlines():
        if not line.startswith("digihuman_http_request_seconds") or f'route="{route}"' not in line:
            continue
        if "_bucket" in line and f'le="{le}"' in line:
            within = float(line.rsplit(" ", 1)[1])
        elif "_count" in line:
            total = float(line.rsplit(" ", 1)[1])
    return within, total


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 s of load per endpoint, 3 repeats")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--fake", action="store_true", help="fake speech engines")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else 10.0
    repeats = 3 if args.quick else 10

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        rs = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
        redis_proc, url = start_embedded_redis(rs, Path(tmp) / "redis")
        port = free_port()
        env = dict(os.environ)
        env.update(
            DIGIHUMAN_REDIS_URL=url,
            DIGIHUMAN_DATA_DIR=str(root),
            DIGIHUMAN_API__RATE_LIMIT_PER_MINUTE="0",
            # the load phase enqueues up to 2 x rate x seconds TTS jobs with no worker running:
            # unbound the tts queue so that it measures enqueueing, not the full-queue 503
            DIGIHUMAN_JOBS__MAX_QUEUED='{"tts": 0, "asr": 500}',
            DIGIHUMAN_LOG_LEVEL="WARNING",
            DIGIHUMAN_JOBS__KINDS='["tts", "asr"]',
        )
        if args.fake:
            env.update(DIGIHUMAN_TTS__ENGINE="fake", DIGIHUMAN_ASR__ENGINE="fake")
        py = [sys.executable, "-m", "digihuman"]
        procs = [subprocess.Popen([*py, "api", "--port", str(port)], env=env)]
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/healthz")
            print(f"## API latency, open loop at {args.rate:.0f} req/s for {seconds:.0f} s each")
            la = os.getloadavg()[0]
            print(f"({os.cpu_count()} CPU cores shared with the load generator; load {la:.1f})\n")
            print(
                "| endpoint | status | achieved req/s | p50 ms | p90 ms | p99 ms | max ms "
                "| server-side ≤ 20 ms |"
            )
            print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            from urllib.parse import quote

            body = json.dumps({"text": SENTENCE}).encode()
            cases = [
                ("GET /create/zbj", raw_request("GET", "/create/zbj?username=alice")),
                ("GET /tts (enqueue)", raw_request("GET", f"/tts?msg={quote(SENTENCE)}")),
                ("POST /v1/tts (enqueue)", raw_request("POST", "/v1/tts", body)),
                ("GET /healthz", raw_request("GET", "/healthz")),
            ]
            for label, raw in cases:
                route = raw.split(b" ")[1].split(b"?")[0].decode()
                before = server_within(base, route)
                lat, codes, achieved = asyncio.run(load(port, raw, args.rate, seconds))
                after = server_within(base, route)
                within = (after[0] - before[0]) / max(1.0, after[1] - before[1]) * 100
                ms = [x * 1000 for x in lat]
                status = ",".join(f"{c}x{n}" for c, n in sorted(codes.items()))
                print(
                    f"| {label} | {status} | {achieved:.0f} | {pct(ms, 50):.1f} | "
                    f"{pct(ms, 90):.1f} | {pct(ms, 99):.1f} | {max(ms):.1f} | {within:.1f}% |"
                )
            # forget the load's jobs before the workers start
            import redis

            redis.Redis.from_url(url).flushdb()

            procs.append(subprocess.Popen([*py, "worker", "tts"], env=env))
            procs.append(subprocess.Popen([*py, "worker", "asr"], env=env))
            deadline = time.monotonic() + 120
            while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not become ready")
                time.sleep(0.2)
            engines = "fake engines" if args.fake else "Piper (en) TTS, faster-whisper base ASR"
            print(f"\n## Speech round trips ({engines}; {repeats} runs, after one warm-up)\n")
            c = httpx.Client(base_url=base, timeout=120)
            c.get("/tts", params={"msg": SENTENCE, "wait": 60})  # warm-up
            poll, waited, asr = [], [], []
            wav = ""
            for _ in range(repeats):
                t = time.perf_counter()
                wav = c.get("/tts", params={"msg": SENTENCE}).json()["message"]
                while not (root / wav).exists():
                    time.sleep(0.002)
                poll.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = c.get("/tts", params={"msg": SENTENCE, "wait": 60})
                assert r.status_code == 200 and (root / r.json()["message"]).exists()
                waited.append(time.perf_counter() - t)
            c.get("/asr", params={"url": wav})  # warm-up
            text = ""
            for _ in range(repeats):
                t = time.perf_counter()
                text = c.get("/asr", params={"url": wav}).json()["message"]
                asr.append(time.perf_counter() - t)
            print("| round trip | median s | max s |")
            print("| --- | ---: | ---: |")
            for label, xs in [
                (f"/tts → file ready, client polls ({len(SENTENCE)} chars)", poll),
                ("/tts?wait= → answered with the file there", waited),
                ("/asr?url=tests/<that>.wav → text", asr),
            ]:
                print(f"| {label} | {statistics.median(xs):.3f} | {max(xs):.3f} |")
            print(f"\nASR heard: {text!r}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
            redis_proc.terminate()
            redis_proc.wait(timeout=30)


if __name__ == "__main__":
    main()
