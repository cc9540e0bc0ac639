"""Integration fixtures: a fresh redis-server per module, worker and API processes.

Never the machine's Redis: each module starts its own ``redis-server`` on a free loopback port
with its data in a temporary folder, and stops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProc:
    """A throwaway redis-server; ``stop``/``start`` keep the port and folder (restart tests)."""

    def __init__(self, workdir: Path, *, aof: bool = False, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.dir = workdir
        self.aof = aof
        self.args = args  # more redis-server options, e.g. ("--maxclients", "50")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/15"

    def start(self) -> RedisProc:
        assert REDIS_SERVER is not None
        cmd = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--loglevel",
            "warning",
        ]
        if self.aof:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        cmd += list(self.args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self, **kw: object):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5, **kw)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    r = RedisProc(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Any]:
    """Make extra redis-servers (``aof=True`` for persistence tests, ``args`` for more options);
    stopped afterwards."""
    made: list[RedisProc] = []

    def make(*, aof: bool = False, args: tuple[str, ...] = ()) -> RedisProc:
        d = tmp_path / f"redis-{len(made)}"
        d.mkdir()
        r = RedisProc(d, aof=aof, args=args).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def helpers() -> Any:
    """``helpers.service_env(...)``, ``helpers.wait_ready(...)``, ``helpers.free_port()``."""
    import types

    return types.SimpleNamespace(
        service_env=service_env, wait_ready=wait_ready, free_port=free_port
    )


@pytest.fixture
def redis_url(redis_proc: RedisProc) -> Iterator[str]:
    """The module's Redis, emptied before each test."""
    if redis_proc.proc is None:
        redis_proc.start()
    redis_proc.client().flushdb()
    yield redis_proc.url


def service_env(redis_url: str, data_root: Path, **extra: str) -> dict[str, str]:
    """Environment for worker/API subprocesses: fast heartbeats, fake engines, quiet logs."""
    env = dict(os.environ)
    env.update(
        {
            "DIGIHUMAN_REDIS_URL": redis_url,
            "DIGIHUMAN_DATA_DIR": str(data_root),
            "DIGIHUMAN_JOBS__HEARTBEAT_S": "0.2",
            "DIGIHUMAN_JOBS__RECLAIM_AFTER_S": "1.0",
            "DIGIHUMAN_JOBS__BLOCK_MS": "200",
            "DIGIHUMAN_JOBS__SHUTDOWN_GRACE_S": "5",
            "DIGIHUMAN_TTS__ENGINE": "fake",
            "DIGIHUMAN_ASR__ENGINE": "fake",
            "DIGIHUMAN_LOG_LEVEL": "WARNING",
            "DIGIHUMAN_API__RATE_LIMIT_PER_MINUTE": "0",
        }
    )
    env.update(extra)
    return env


class Procs:
    """Subprocesses started by a test; all stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(
        self, kind: str, env: dict[str, str], concurrency: int = 1
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{kind}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(
            [sys.executable, "-m", "digihuman", "worker", kind, "-c", str(concurrency)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(p)
        return p

    def api(self, env: dict[str, str]) -> str:
        port = free_port()
        log = open(self.tmp / f"api-{port}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(
            [sys.executable, "-m", "digihuman", "api", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(p)
        url = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"the API did not start; see {log.name}")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    ps = Procs(tmp_path)
    yield ps
    ps.stop_all()


def wait_ready(redis_url: str, kind: str, n: int = 1, timeout: float = 20.0) -> None:
    """Until ``n`` workers of ``kind`` have a fresh heartbeat."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.zcount(f"digihuman:workers:{kind}", time.time(), "+inf") >= n:
            return
        time.sleep(0.05)
    raise RuntimeError(f"no {kind} worker became ready")
