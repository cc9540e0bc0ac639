"""``digihuman serve`` under faults: its Redis killed, itself killed, a remote Redis unreachable.

One real ``serve`` (loopback ports, a temporary data root, embedded Redis, one ``tts`` worker)
is shared by the first two tests: the first SIGKILLs its redis-server and waits for ``/readyz``
and a job to work again; the second SIGKILLs ``serve`` itself and waits for every child to go.
Children are found through ``/proc`` (Linux, where PR_SET_PDEATHSIG exists).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is missing"),
]

PY = [sys.executable, "-m", "digihuman"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(redis_url: str, root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DIGIHUMAN_REDIS_URL=redis_url,
        DIGIHUMAN_DATA_DIR=str(root),
        DIGIHUMAN_JOBS__HEARTBEAT_S="0.2",
        DIGIHUMAN_JOBS__RECLAIM_AFTER_S="1.0",
        DIGIHUMAN_JOBS__BLOCK_MS="200",
        DIGIHUMAN_JOBS__SHUTDOWN_GRACE_S="5",
        DIGIHUMAN_JOBS__KINDS='["tts"]',
        DIGIHUMAN_TTS__ENGINE="fake",
        DIGIHUMAN_LOG_LEVEL="INFO",
        DIGIHUMAN_API__RATE_LIMIT_PER_MINUTE="0",
    )
    env.update(extra)
    return env


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name; None when gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields


def _alive(pid: int) -> bool:
    return _stat(pid) is not None


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None and int(st[1]) == pid:
                kids.append(int(d.name))
    return sorted(kids)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _readyz(api: str) -> int:
    try:
        return httpx.get(f"{api}/readyz", timeout=3).status_code
    except httpx.HTTPError:
        return 0


def _until(cond: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"{what} (after {timeout:.0f} s)\n{tail}")
        time.sleep(0.2)


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    api: str
    redis_url: str
    root: Path
    log: Path
    seen: set[int]  # every child pid seen, killed at the end whatever happened


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("serve")
    root = tmp / "root"
    redis_url = f"redis://127.0.0.1:{_free_port()}/15"  # nothing listens there: serve embeds one
    aport = _free_port()
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*PY, "serve", "--port", str(aport), "--kinds", "tts"],
            env=_env(redis_url, root),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the clean-up below can reach children left in its group
        )
    s = Serve(proc, f"http://127.0.0.1:{aport}", redis_url, root, log, set())
    try:
        _until(lambda: _readyz(s.api) == 200, 90, "serve never became ready", log)
        yield s
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for pid in s.seen | set(_children(proc.pid)):  # orphans, if a fix regressed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _redis_pid(url: str) -> int | None:
    try:
        info = redis.Redis.from_url(url, socket_timeout=2).info("server")
        return int(info["process_id"])
    except redis.RedisError:
        return None


@pytest.mark.timeout(240)
def test_embedded_redis_killed_is_restarted_and_readyz_recovers(serve: Serve) -> None:
    kids = _children(serve.proc.pid)
    serve.seen.update(kids)
    old = _redis_pid(serve.redis_url)
    assert old is not None and old in kids, (old, kids)

    os.kill(old, signal.SIGKILL)
    _until(lambda: not _alive(old), 20, "the killed redis-server did not go")
    _until(
        lambda: _redis_pid(serve.redis_url) not in (None, old),
        60,
        "the embedded Redis was not restarted",
        serve.log,
    )
    new = _redis_pid(serve.redis_url)
    assert new in _children(serve.proc.pid)  # restarted by serve, same port
    serve.seen.update(_children(serve.proc.pid))
    _until(lambda: _readyz(serve.api) == 200, 60, "/readyz did not recover", serve.log)

    r = httpx.get(f"{serve.api}/tts", params={"msg": "Back again.", "wait": 30}, timeout=60)
    assert r.status_code == 200, r.text
    assert (serve.root / r.json()["message"]).exists()


@pytest.mark.timeout(120)
def test_children_die_with_serve_when_it_is_killed(serve: Serve) -> None:
    kids = _children(serve.proc.pid)
    serve.seen.update(kids)
    names = {pid: _cmdline(pid) for pid in kids}
    assert any("redis-server" in c for c in names.values()), names
    assert any(" api" in c for c in names.values()), names
    assert any(" worker tts" in c for c in names.values()), names
    rport = int(serve.redis_url.rsplit(":", 1)[1].split("/")[0])

    serve.proc.kill()  # SIGKILL: serve gets no chance to stop anything
    serve.proc.wait(timeout=10)
    _until(
        lambda: not any(_alive(p) for p in kids),
        30,
        f"children outlived serve: {[names[p] for p in kids if _alive(p)]}",
    )
    with socket.socket() as s:  # the embedded Redis is gone too
        assert s.connect_ex(("127.0.0.1", rport)) != 0


# ---- no embedded fallback for a remote Redis ---------------------------------------------------
def _serve_once(env: dict[str, str], tmp: Path) -> tuple[int | None, str]:
    """Run serve until it exits (30 s at most); (status or None if it kept running, stderr)."""
    err = tmp / "stderr.txt"
    with open(err, "wb") as e:
        proc = subprocess.Popen(
            [*PY, "serve", "--port", str(_free_port()), "--kinds", "tts"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=e,
            start_new_session=True,
        )
    try:
        rc: int | None = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        kids = _children(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return rc, err.read_text(errors="replace")


@pytest.mark.timeout(90)
def test_unreachable_remote_redis_fails_with_one_line_and_no_embedded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    url = "redis://:s3cret@192.0.2.1:6390/0"  # TEST-NET-1: never answers
    rc, err = _serve_once(_env(url, root, DIGIHUMAN_REDIS__CONNECT_TIMEOUT_S="0.5"), tmp_path)
    assert rc == 2, f"serve kept running or exited {rc}: {err[-2000:]}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "192.0.2.1:6390" in lines[0] and "loopback" in lines[0]
    assert "s3cret" not in err  # the URL is shown without its password
    assert not (root / "redis").exists()  # no embedded Redis was started


@pytest.mark.timeout(90)
def test_loopback_redis_with_embedded_off_fails_clearly(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/15"
    env = _env(url, tmp_path / "root", DIGIHUMAN_REDIS__EMBEDDED="false")
    rc, err = _serve_once(env, tmp_path)
    assert rc == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "DIGIHUMAN_REDIS__EMBEDDED" in lines[0], lines


# ---- the two ways children learn that the supervisor died ---------------------------------------
PARENT = """
import sys
from digihuman.jobs.supervisor import Child, Supervisor
mode, argv = sys.argv[1], sys.argv[2:]
Supervisor([Child("child", argv)], parent_watch=mode).run()
"""

PIPE_CHILD = (
    "from digihuman.jobs.supervisor import watch_parent; import time; watch_parent(); "
    "time.sleep(300)"
)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("mode", "child"),
    [
        ("pdeathsig", ["sleep", "300"]),  # any binary: set between fork and exec
        ("pipe", [sys.executable, "-c", PIPE_CHILD]),  # the fallback where prctl is missing
    ],
)
def test_supervisor_children_die_with_it(mode: str, child: list[str]) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode, *child])
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not kids:
            assert parent.poll() is None, "the supervisor exited"
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.1)
            kids = _children(parent.pid)
        parent.kill()  # (a pipe child that starts its watch later still sees end of file)
        parent.wait(timeout=10)
        _until(lambda: not any(_alive(p) for p in kids), 20, f"the child outlived it ({mode})")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
