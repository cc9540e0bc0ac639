"""Live commands of several rooms on one ``stream`` worker: one room's slow work never delays
another room, and an interrupt acts at once even while that room's own audio URL is loading.

Real components: a redis-server (conftest), the API and one ``stream`` worker as processes, and
an HTTP server on 127.0.0.1 (allow-listed) that trickles a WAV file over several seconds.
"""

from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)
HANG_S = 6.0  # how long the slow server takes to send one file


class SlowAudio:
    """``GET /a.wav?s=<seconds>``: the WAV sent in small pieces over ``s`` seconds."""

    def __init__(self, wav: bytes) -> None:
        self.started = threading.Event()  # a request is being trickled
        self.finished: list[float] = []  # when each answer was fully sent (monotonic)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                q = parse_qs(urlparse(self.path).query)
                seconds = float(q.get("s", [str(HANG_S)])[0])
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(wav)))
                self.end_headers()
                outer.started.set()
                pieces = 30
                step = -(-len(wav) // pieces)
                try:
                    for i in range(0, len(wav), step):
                        self.wfile.write(wav[i : i + step])
                        self.wfile.flush()
                        time.sleep(seconds / pieces)
                except OSError:  # the client gave up
                    return
                outer.finished.append(time.monotonic())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._t = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._t.start()

    def url(self, seconds: float = HANG_S) -> str:
        return f"http://127.0.0.1:{self.port}/a.wav?s={seconds:g}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return out, time.monotonic() - t0


def test_a_slow_fetch_blocks_neither_other_rooms_nor_its_own_interrupt(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    import httpx

    root = tmp_path / "root"
    (root / "tests").mkdir(parents=True)
    wav = resources.files("digihuman.assets") / "speech_en.wav"
    shutil.copy(str(wav), root / "tests" / "speech.wav")
    slow = SlowAudio((root / "tests" / "speech.wav").read_bytes())
    env = helpers.service_env(
        redis_url,
        root,
        DIGIHUMAN_JOBS__KINDS='["stream"]',
        DIGIHUMAN_LIVE__RECORD="false",
        DIGIHUMAN_LIVE__HLS="false",
        DIGIHUMAN_LIVE__VIEWER="false",
        DIGIHUMAN_LIVE__REPLY_TIMEOUT_S="25",
        DIGIHUMAN_ROOMS__CLIPS="false",
        DIGIHUMAN_API__URL_ALLOWLIST='["127.0.0.1"]',
        DIGIHUMAN_API__ALLOW_PRIVATE_URLS="true",
        DIGIHUMAN_API__FETCH_TIMEOUT_S="20",
    )
    procs.worker("stream", env)
    api = procs.api(env)
    try:
        helpers.wait_ready(redis_url, "stream", n=1, timeout=60)
        c = httpx.Client(base_url=api, timeout=60)
        a, b = (c.get("/create/zbj", params={"username": u}).json()["message"] for u in "ab")
        for z in (a, b):  # both rooms open on the one worker
            assert c.post(f"/v1/rooms/{z}/live").status_code == 200
        owners = {c.get(f"/v1/rooms/{z}/live").json()["owner"] for z in (a, b)}
        assert len(owners) == 1

        # room A's /human hangs on the slow URL ...
        got: dict[str, Any] = {}

        def slow_human() -> None:
            r = httpx.get(f"{api}/human", params={"zbjname": a, "audioUrl": slow.url()}, timeout=60)
            got["r"], got["at"] = r, time.monotonic()

        t = threading.Thread(target=slow_human)
        t.start()
        assert slow.started.wait(10)
        time.sleep(0.3)  # the worker is inside the fetch
        # ... while room B speaks at once and room A answers its status and interrupt at once
        rb, tb = timed(c.get, "/human", params={"zbjname": b, "audioUrl": "tests/speech.wav"})
        assert rb.status_code == 200 and rb.json()["message"] > 0, rb.text
        sa, ts = timed(c.get, f"/v1/rooms/{a}/live")
        assert sa.status_code == 200 and sa.json()["state"] == "idle", sa.text
        ia, ti = timed(c.post, f"/v1/rooms/{a}/interrupt")
        interrupted_at = time.monotonic()
        assert ia.status_code == 200, ia.text
        print(f"B /human {tb:.3f} s, A status {ts:.3f} s, A interrupt {ti:.3f} s (hang {HANG_S})")
        assert max(tb, ts, ti) < 1.5, (tb, ts, ti)
        # the fetch issued before the interrupt is abandoned: a 409 now, not a late utterance
        t.join(timeout=HANG_S + 10)
        r = got["r"]
        assert r.status_code == 409 and "interrupted" in r.json()["message"], r.text
        assert got["at"] - interrupted_at < 1.5
        assert c.get(f"/v1/rooms/{b}/live").json()["state"] in ("starting", "speaking")
        deadline = time.monotonic() + HANG_S + 5
        while not slow.finished and time.monotonic() < deadline:  # the fetch would have landed
            time.sleep(0.1)
        time.sleep(0.3)
        st = c.get(f"/v1/rooms/{a}/live").json()
        assert st["state"] == "idle" and st["queued"] == [] and st["current"] is None, st

        # one room's own commands keep their order: a slow URL then a file play in that order
        second: dict[str, Any] = {}

        def then_local() -> None:
            slow.started.wait(10)
            time.sleep(0.2)
            second["r"] = httpx.get(
                f"{api}/human", params={"zbjname": a, "audioUrl": "tests/speech.wav"}, timeout=60
            )

        slow.started.clear()
        t2 = threading.Thread(target=then_local)
        t2.start()
        first = c.get("/human", params={"zbjname": a, "audioUrl": slow.url(1.5)})
        t2.join(timeout=30)
        assert first.status_code == 200, first.text
        duration = first.json()["duration"]
        assert second["r"].status_code == 200, second["r"].text
        assert second["r"].json()["message"] > duration  # it queued behind the slow one
        st = c.get(f"/v1/rooms/{a}/live").json()
        ids = ([st["current"]["id"]] if st["current"] else []) + [q["id"] for q in st["queued"]]
        assert ids == [first.json()["id"], second["r"].json()["id"]], st
    finally:
        slow.stop()
