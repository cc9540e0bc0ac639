"""jobs.fetch against real local servers: DNS rebinding, TLS names, deadlines, URL schemes.

Every server here is a real socket server on 127.0.0.1. The "public" host of the rebinding tests
is a second local server: the test routes the public address the resolver answers to it (the
machine has no internet to reach), so which server receives the request shows which address the
fetch connected to.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from digihuman.jobs import fetch
from digihuman.jobs.fetch import FetchFailed, fetch_to, is_url

PUBLIC_IP = "93.184.215.14"  # a global address: passes the public-address check
NAME = "files.example.com"
BODY = b"RIFF" + bytes(range(256)) * 8


class RawServer:
    """A threaded TCP server on 127.0.0.1; ``serve(conn, request_head)`` answers each request."""

    def __init__(
        self,
        serve: Callable[[socket.socket, bytes], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.serve = serve
        self.tls = tls
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(20)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            self.requests.append(head)
            self.serve(conn, head)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def ok(conn: socket.socket, head: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for s in made:
        s.close()


def _server(servers: list[RawServer], serve: Any, tls: ssl.SSLContext | None = None) -> RawServer:
    s = RawServer(serve, tls)
    servers.append(s)
    return s


def _host_header(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"host:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


def _route_public_to(monkeypatch: pytest.MonkeyPatch, public: RawServer) -> None:
    """The public address leads to the ``public`` server; loopback stays loopback."""
    real = socket.create_connection

    def connect(ip: str, port: int, timeout_s: float) -> socket.socket:
        if ip == PUBLIC_IP:
            return real(("127.0.0.1", public.port), timeout=timeout_s)
        return real((ip, port), timeout=timeout_s)

    monkeypatch.setattr(fetch, "_connect", connect, raising=False)


def _rebinding_answers() -> tuple[list[str], Callable[[str, int], list[str]]]:
    """A DNS server under an attacker's control: public first, then 127.0.0.1."""
    asked: list[str] = []

    def answer(host: str, port: int) -> list[str]:
        asked.append(host)
        return [PUBLIC_IP] if len(asked) == 1 else ["127.0.0.1"]

    return asked, answer


@pytest.mark.parametrize("how", ["system-resolver", "injected-resolver"])
def test_dns_rebinding_never_reaches_the_internal_server(
    servers: list[RawServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    internal = _server(servers, ok)  # an internal admin server on 127.0.0.1
    public = _server(servers, ok)  # the host the name is supposed to be
    _route_public_to(monkeypatch, public)
    asked, answer = _rebinding_answers()
    kw: dict[str, Any] = {}
    if how == "injected-resolver":
        kw["resolve"] = answer
    else:  # the process's own resolver answers like the attacker's DNS server
        real = socket.getaddrinfo

        def getaddrinfo(host: str, port: Any, *a: Any, **k: Any) -> Any:
            if host != NAME:
                return real(host, port, *a, **k)
            (ip,) = answer(host, int(port))
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    url = f"http://{NAME}:{internal.port}/admin/delete-all?confirm=1"
    out = fetch_to(url, tmp_path / "x.wav", allowlist=[NAME], timeout_s=10, **kw)

    assert internal.requests == []  # nothing reached the internal server
    assert len(public.requests) == 1 and out.read_bytes() == BODY
    line = public.requests[0].split(b"\r\n", 1)[0]
    assert line == b"GET /admin/delete-all?confirm=1 HTTP/1.1"
    assert _host_header(public.requests[0]) == f"{NAME}:{internal.port}"  # the name, not the IP
    assert asked == [NAME]  # resolved once, and that answer was used


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]]:
    """A server context with a certificate for NAME (recording the SNI it sees) and a client
    context trusting only that certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    out = ["-keyout", str(key), "-out", str(cert), "-days", "2"]
    name = ["-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}"]
    subprocess.run(
        ["openssl", "req", "-x509", *ec, *out, *name],
        check=True,
        capture_output=True,
    )
    seen: list[str | None] = []
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    server.sni_callback = lambda sock, name, ctx: seen.append(name)  # records; None: go on
    client = ssl.create_default_context(cafile=str(cert))
    return server, client, seen


def test_https_connects_to_the_checked_address_with_the_name_for_sni_and_host(
    servers: list[RawServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server_ctx, client_ctx, sni = _tls_pair(tmp_path)
    public = _server(servers, ok, tls=server_ctx)
    _route_public_to(monkeypatch, public)
    _, answer = _rebinding_answers()
    out = fetch_to(
        f"https://{NAME}/a.wav",
        tmp_path / "a.wav",
        allowlist=[NAME],
        resolve=answer,
        ssl_context=client_ctx,
        timeout_s=10,
    )
    assert out.read_bytes() == BODY
    assert sni == [NAME]  # SNI from the name; the certificate was checked against it
    assert _host_header(public.requests[0]) == NAME


def _trickle_body(conn: socket.socket, head: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(300):  # one byte every 50 ms, for up to 15 s
        conn.sendall(b"x")
        time.sleep(0.05)


def _trickle_head(conn: socket.socket, head: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(300):
        conn.sendall(b"y")
        time.sleep(0.05)


def _silent(conn: socket.socket, head: bytes) -> None:
    time.sleep(15)


def _timed(fn: Callable[[], Any]) -> tuple[float, BaseException | None]:
    t0 = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return time.monotonic() - t0, exc
    return time.monotonic() - t0, None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("serve", [_trickle_body, _trickle_head], ids=["body", "headers"])
def test_a_trickling_server_is_cut_off_at_the_deadline(
    servers: list[RawServer], tmp_path: Path, serve: Any
) -> None:
    srv = _server(servers, serve)
    took, err = _timed(
        lambda: fetch_to(
            f"http://127.0.0.1:{srv.port}/a.wav",
            tmp_path / "a.wav",
            allowlist=["127.0.0.1"],
            allow_private=True,
            timeout_s=2.0,
        )
    )
    assert isinstance(err, FetchFailed) and "took over 2 s" in str(err), err
    assert 1.9 <= took < 3.5, took  # the deadline, plus scheduling slack on a busy machine
    assert not list(tmp_path.iterdir())  # no partial file


@pytest.mark.timeout(60)
def test_the_first_byte_is_bounded(servers: list[RawServer], tmp_path: Path) -> None:
    srv = _server(servers, _silent)  # reads the request, never answers
    took, err = _timed(
        lambda: fetch_to(
            f"http://127.0.0.1:{srv.port}/a.wav",
            tmp_path / "a.wav",
            allowlist=["127.0.0.1"],
            allow_private=True,
            timeout_s=30.0,
            first_byte_timeout_s=1.0,
        )
    )
    assert isinstance(err, FetchFailed) and "first byte" in str(err), err
    assert took < 3.0, took


@pytest.mark.timeout(60)
def test_the_connect_is_bounded(tmp_path: Path) -> None:
    # a server that never accepts: once its accept queue is full, the kernel drops new SYNs
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fill.append(c)
    try:
        took, err = _timed(
            lambda: fetch_to(
                f"http://127.0.0.1:{port}/a.wav",
                tmp_path / "a.wav",
                allowlist=["127.0.0.1"],
                allow_private=True,
                timeout_s=30.0,
                connect_timeout_s=1.0,
            )
        )
    finally:
        for c in fill:
            c.close()
        srv.close()
    assert isinstance(err, FetchFailed) and "no connection within" in str(err), err
    assert took < 3.0, took


def test_url_schemes_in_any_case(servers: list[RawServer], tmp_path: Path) -> None:
    assert is_url("HTTP://example.com/a.wav") and is_url("Https://x") and is_url("file:///x")
    assert not is_url("tests/a.wav") and not is_url("tests/http://x") and not is_url("a:b")
    srv = _server(servers, ok)
    out = fetch_to(
        f"HTTP://127.0.0.1:{srv.port}/a.wav",
        tmp_path / "a.wav",
        allowlist=["127.0.0.1"],
        allow_private=True,
    )
    assert out.read_bytes() == BODY


@pytest.mark.parametrize("scheme", ["HTTP", "Http", "http"])
def test_the_asr_worker_fetches_an_upper_case_url(
    servers: list[RawServer], tmp_path: Path, scheme: str
) -> None:
    """The API accepts ``HTTP://`` as a URL; the worker must fetch it, not look for a file."""
    import numpy as np

    from digihuman.config import Settings
    from digihuman.jobs.handlers import make_handler
    from digihuman.jobs.worker import JobContext
    from digihuman.media.audio import save_wav
    from digihuman.storage import DataRoot

    save_wav(tmp_path / "speech.wav", 0.5 * np.sin(np.arange(16000) / 5.0))
    wav = (tmp_path / "speech.wav").read_bytes()

    def serve(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(wav) + wav)

    srv = _server(servers, serve)
    settings = Settings(data_dir=tmp_path / "root")
    settings.asr.engine = "fake"
    settings.api.url_allowlist = ["127.0.0.1"]
    settings.api.allow_private_urls = True
    root = DataRoot(settings.data_dir).ensure()
    ctx = JobContext(
        job_id="j1",
        kind="asr",
        payload={"source": f"{scheme}://127.0.0.1:{srv.port}/speech.wav"},
        attempt=1,
        data_root=root,
    )
    out = make_handler("asr", settings)(ctx)
    assert out["duration"] == 1.0 and len(srv.requests) == 1
    assert not list(root.tests.glob(".fetch-*"))  # the download was removed
