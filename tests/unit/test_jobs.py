"""Queue wire format, URL guard, fetch limits (loopback server), rate limiter, WAV writer."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from digihuman.api.security import RateLimiter
from digihuman.jobs.fetch import (
    FetchFailed,
    TooLarge,
    UrlRefused,
    check_url,
    fetch_to,
    host_allowed,
)
from digihuman.jobs.handlers import make_handler
from digihuman.jobs.queue import Keys, decode, encode, parse_record


def test_keys_and_json_wire_format() -> None:
    k = Keys("dh:")
    assert k.stream("tts") == "dh:jobs:tts" and k.dead("tts") == "dh:dead:tts"
    assert k.record("x") == "dh:job:x" and k.result("x") == "dh:result:x"
    payload = {"text": "你好, world", "n": 3}
    assert decode(encode(payload)) == payload
    assert "你好" in encode(payload)  # plain JSON text, never pickle
    rec = parse_record(
        {"kind": "tts", "status": "done", "attempts": "2", "result": '{"path": "tests/a.wav"}'},
        "a",
    )
    assert rec is not None and rec.done and rec.result == {"path": "tests/a.wav"}
    assert rec.public()["attempts"] == 2
    assert parse_record({}, "a") is None


def test_host_allow_list_patterns() -> None:
    assert host_allowed("example.com", ["example.com"])
    assert host_allowed("EXAMPLE.com.", ["example.com"])
    assert not host_allowed("a.example.com", ["example.com"])
    assert host_allowed("a.example.com", ["*.example.com"])
    assert host_allowed("a.b.example.com", [".example.com"])
    assert not host_allowed("badexample.com", ["*.example.com"])
    assert not host_allowed("example.com", [])


def test_public_address_allowed_private_refused() -> None:
    host, port, addrs = check_url("http://93.184.216.34:8080/a.wav", allowlist=["93.184.216.34"])
    assert (host, port, addrs) == ("93.184.216.34", 8080, ["93.184.216.34"])
    with pytest.raises(UrlRefused, match="non-public"):
        check_url("http://127.0.0.1/a.wav", allowlist=["127.0.0.1"])
    check_url("http://127.0.0.1/a.wav", allowlist=["127.0.0.1"], allow_private=True)
    with pytest.raises(UrlRefused, match="allow-list"):
        check_url("http://93.184.216.34/a.wav", allowlist=[])


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"RIFF" + b"\x00" * 2000

    def do_GET(self) -> None:
        if self.path == "/big":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the limit is enforced while reading
            self.wfile.write(b"x" * 5000)
        elif self.path == "/redirect-internal":
            self.send_response(302)
            self.send_header("Location", "http://10.1.2.3/a.wav")
            self.end_headers()
        elif self.path == "/missing":
            self.send_response(404)
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_fetch_limits(local_server: str, tmp_path: Path) -> None:
    kw = {"allowlist": ["127.0.0.1"], "allow_private": True, "max_bytes": 4096}
    out = fetch_to(f"{local_server}/a.wav", tmp_path / "a.wav", **kw)  # type: ignore[arg-type]
    assert out.read_bytes() == _Handler.body
    with pytest.raises(TooLarge):
        fetch_to(f"{local_server}/big", tmp_path / "b.wav", **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "b.wav").exists()
    assert not list(tmp_path.glob(".b*"))  # no half file left behind
    with pytest.raises(UrlRefused, match="allow-list"):  # the redirect's host is not allowed
        fetch_to(f"{local_server}/redirect-internal", tmp_path / "c", **kw)  # type: ignore[arg-type]
    with pytest.raises(FetchFailed, match="404"):
        fetch_to(f"{local_server}/missing", tmp_path / "d", **kw)  # type: ignore[arg-type]
    with pytest.raises(UrlRefused, match="non-public"):  # loopback without allow_private
        fetch_to(f"{local_server}/a.wav", tmp_path / "e", allowlist=["127.0.0.1"])


def test_rate_limiter_token_bucket() -> None:
    rl = RateLimiter(per_minute=600, burst=3)  # 10 tokens/s
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.take("a")
    assert 0 < wait <= 0.1
    assert rl.take("b") == 0.0  # per client
    time.sleep(0.12)
    assert rl.take("a") == 0.0
    assert RateLimiter(per_minute=0, burst=1).take("a") == 0.0  # off


def test_stub_kinds_and_unknown_kind(tmp_path: Path) -> None:
    from digihuman.config import Settings
    from digihuman.errors import InputError
    from digihuman.jobs.worker import JobContext
    from digihuman.storage import DataRoot

    s = Settings(data_dir=tmp_path)
    ctx = JobContext("j", "bqfk", {}, 1, DataRoot(tmp_path))
    with pytest.raises(InputError, match="msId"):  # bqfk works since [5/7]: it checks its input
        make_handler("bqfk", s)(ctx)
    # stream works since [6/7]: its worker holds live sessions (a Redis nobody listens on here)
    s.redis.url = "redis://127.0.0.1:9/15"
    stream = make_handler("stream", s)
    try:
        with pytest.raises(InputError, match="zbjname"):
            stream(ctx)
    finally:
        stream.host.stop()  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="unknown job kind"):
        make_handler("nope", s)


def test_adaptive_prefetch_only_while_jobs_are_tiny(tmp_path: Path) -> None:
    from digihuman.config import JobSettings
    from digihuman.jobs.worker import FAST_PREFETCH, Worker
    from digihuman.storage import DataRoot

    class _Client:  # construction only registers the start script
        def register_script(self, script: str) -> None:
            return None

    w = Worker(_Client(), Keys("t:"), "tts", lambda ctx: {}, data_root=DataRoot(tmp_path),
               settings=JobSettings())  # fmt: skip
    assert w._read_count() == 1  # nothing known yet: one at a time
    for _ in range(5):
        w._observe(0.0005)
    assert w._read_count() == FAST_PREFETCH
    for _ in range(10):
        w._observe(2.0)  # real work: back to one job per read so idle workers get the rest
    assert w._read_count() == 1


def test_sweep_removes_only_old_temp_files_where_jobs_write(tmp_path: Path) -> None:
    import os

    from digihuman.jobs.worker import sweep_temp_files
    from digihuman.storage import DataRoot

    root = DataRoot(tmp_path).ensure()
    (root.tests / "debug").mkdir()
    temps = [
        root.tests / ".3f2a.k2j_x9ab.wav",  # atomic_output / mkstemp
        root.tests / ".fetch-3f2a",  # a download
        root.tests / "..fetch-3f2a.ab12cd34.tmp",  # the download's own temp file
        root.tests / "debug" / ".job-1.abcdefgh.json",
        root.output / ".3f2a.part1234.mp4",  # the video writer
        root.inputs / ".x.wav.part",
    ]
    frames = root.output / ".3f2a_frames.q1w2e3r4"  # a frame folder (mkdtemp)
    kept = [
        root.tests / "answer.wav",  # results, user files, other folders: never
        root.tests / ".gitkeep",
        root.models / ".unet.abcdefgh.pth",
        root.avatars / ".me.abcdefgh",
    ]
    fresh = root.tests / ".fresh.abcdefgh.wav"  # a running job's temp file
    frames.mkdir()
    (frames / "00000.png").write_bytes(b"x")
    for p in temps + kept + [fresh]:
        p.write_bytes(b"x")
    old = time.time() - 3600
    for p in temps + kept + [frames]:
        os.utime(p, (old, old))
    assert sweep_temp_files(root, 600) == len(temps) + 1
    assert not any(p.exists() for p in temps) and not frames.exists()
    assert all(p.exists() for p in kept) and fresh.exists()
