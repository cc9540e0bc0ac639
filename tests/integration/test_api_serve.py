"""``digihuman serve``: embedded Redis, supervised API + workers, restart on crash, clean stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis


def _wait_ready(api: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(f"{api}/readyz", timeout=2)
            if r.status_code == 200:
                return dict(r.json())
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve never became ready"
        time.sleep(0.2)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.timeout(120)
def test_serve_embedded_redis_supervision_and_clean_shutdown(tmp_path: Path, helpers: Any) -> None:
    root = tmp_path / "root"
    rport, aport = helpers.free_port(), helpers.free_port()
    redis_url = f"redis://127.0.0.1:{rport}/15"  # nothing listens there: serve embeds one
    env = helpers.service_env(redis_url, root, DIGIHUMAN_JOBS__KINDS='["tts", "asr"]')
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "digihuman", "serve", "--port", str(aport), "--kinds", "tts,asr"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{aport}"
    try:
        ready = _wait_ready(api)
        assert ready["workers"] == {"tts": 1, "asr": 1}
        r = httpx.get(f"{api}/tts", params={"msg": "Hello there.", "wait": 10}, timeout=20)
        assert r.status_code == 200 and (root / r.json()["message"]).exists()

        # a worker crashes: the supervisor starts a new one
        rc = redis.Redis.from_url(redis_url, decode_responses=True)
        (name,) = rc.zrange("digihuman:workers:tts", 0, -1)
        os.kill(int(name.split(":")[1]), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            names = rc.zrangebyscore("digihuman:workers:tts", time.time(), "+inf")
            if any(n != name for n in names):
                break
            assert time.monotonic() < deadline, "the crashed worker was not restarted"
            time.sleep(0.2)
        r = httpx.get(f"{api}/tts", params={"msg": "Still here.", "wait": 10}, timeout=20)
        assert r.status_code == 200 and (root / r.json()["message"]).exists()
    finally:
        proc.send_signal(signal.SIGINT)
        rc_code = proc.wait(timeout=60)
    assert rc_code == 0
    with socket.socket() as s:  # the embedded Redis stopped with the group
        assert s.connect_ex(("127.0.0.1", rport)) != 0
    assert any((root / "redis").rglob("*.aof*"))  # it persisted under the data root
