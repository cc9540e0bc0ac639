"""The supervisor's pieces: which Redis URLs may get an embedded Redis, redaction, stop order."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from digihuman.config import RedisSettings
from digihuman.errors import DigihumanError
from digihuman.jobs.supervisor import (
    Child,
    Supervisor,
    embedded_redis_child,
    is_loopback_url,
    redacted_url,
    unreachable_message,
)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://localhost/0", True),
        ("redis://127.0.0.2:7000", True),
        ("redis://[::1]:6379/0", True),
        ("rediss://:pw@127.0.0.1:6380/1", True),
        ("redis://", True),  # redis-py's default: localhost
        ("redis://10.0.0.5:6379/0", False),
        ("redis://redis:6379/0", False),  # a host name (docker compose service): anywhere
        ("redis://192.0.2.1/0", False),
        ("unix:///run/redis.sock", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_redacted_url_hides_only_the_password() -> None:
    assert redacted_url("redis://:s3cret@10.0.0.5:6379/2") == "redis://:***@10.0.0.5:6379/2"
    assert redacted_url("rediss://app:s3cret@[::1]/0") == "rediss://app:***@[::1]/0"
    assert redacted_url("redis://10.0.0.5:6379/0") == "redis://10.0.0.5:6379/0"


def test_remote_url_never_gets_an_embedded_redis(tmp_path: Path) -> None:
    rs = RedisSettings(url="redis://:s3cret@10.0.0.5:6379/0")
    msg = unreachable_message(rs)
    assert "s3cret" not in msg and "10.0.0.5:6379" in msg and "\n" not in msg
    with pytest.raises(DigihumanError, match="loopback"):
        embedded_redis_child(rs, tmp_path / "redis")
    assert not (tmp_path / "redis").exists()


def test_embedded_child_keeps_the_password_and_db(tmp_path: Path) -> None:
    rs = RedisSettings(url="redis://127.0.0.1:1/3", password=SecretStr("pw"))
    child, url = embedded_redis_child(rs, tmp_path / "redis")
    assert url.startswith("redis://127.0.0.1:") and url.endswith("/3")
    assert child.first and child.argv[child.argv.index("--requirepass") + 1] == "pw"
    assert "--logfile" in child.argv


TRAP = "trap 'sleep {d}; exit 0' TERM; while :; do sleep 0.05; done"


@pytest.mark.skipif(os.name != "posix", reason="sh and signals")
def test_first_children_stop_last_and_a_second_stop_skips_the_grace(tmp_path: Path) -> None:
    marker = tmp_path / "ignoring"
    ignore_term = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
    )
    infra = Child("infra", ["sh", "-c", TRAP.format(d=0)], first=True, ready=lambda: True)
    app = Child("app", ["sh", "-c", TRAP.format(d=0.5)])
    slow = Child("slow", [sys.executable, "-c", ignore_term, str(marker)])
    sup = Supervisor([infra, app, slow], grace_s=60, parent_watch="none")
    t = threading.Thread(target=sup.run, kwargs={"poll_s": 0.05})
    t.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the children did not start"
        time.sleep(0.05)
    sup.stop()
    while app.proc is not None and app.proc.poll() is None:
        assert infra.proc is not None and infra.proc.poll() is None  # infra waits for the app
        time.sleep(0.02)
    time.sleep(0.3)
    assert t.is_alive() and slow.proc is not None and slow.proc.poll() is None  # in its grace
    sup.stop()  # second request: one more second, then SIGKILL
    t.join(timeout=20)
    assert not t.is_alive()
    assert slow.proc.returncode == -9
    assert infra.proc is not None and infra.proc.returncode == 0
