"""Overload protection against real processes: an API process, real workers, a real Redis.

* a burst of 200 ``/tts`` calls from one client with the default settings: all accepted, all
  files whole (no per-address rate limit by default);
* a queue filled past its bound: 503 + ``Retry-After``, and every accepted job completes;
* 80 concurrent waiters against a Redis with ``--maxclients 50``: the waits are capped (503 +
  ``Retry-After`` past the cap), other requests are still served, a worker can still connect,
  and a waiter whose client disconnects stops blocking in Redis.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis


def _env(helpers: Any, redis_url: str, root: Path, **extra: str) -> dict[str, str]:
    env = helpers.service_env(redis_url, root, DIGIHUMAN_JOBS__KINDS='["tts", "asr"]', **extra)
    env.pop("DIGIHUMAN_API__RATE_LIMIT_PER_MINUTE", None)  # the defaults, as a seed deploys
    return env


def _whole_wav(path: Path) -> bool:
    try:
        with wave.open(str(path)) as w:
            frames = w.getnframes()
            expected = 44 + frames * w.getsampwidth() * w.getnchannels()
            return frames > 0 and path.stat().st_size >= expected
    except (OSError, EOFError, wave.Error):
        return False


async def _burst(url: str, n: int, params: dict[str, str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        return list(await asyncio.gather(*(c.get("/tts", params=params) for _ in range(n))))


def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_a_burst_of_200_tts_calls_from_one_client_is_all_accepted(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    root = tmp_path / "root"
    env = _env(helpers, redis_url, root)
    procs.worker("tts", env, concurrency=2)
    api = procs.api(env)
    helpers.wait_ready(redis_url, "tts")

    rs = asyncio.run(_burst(api, 200, {"msg": "Hello, and welcome to the interview."}))
    codes = [r.status_code for r in rs]
    assert codes == [200] * 200, {c: codes.count(c) for c in set(codes)}
    paths = {root / r.json()["message"] for r in rs}
    assert len(paths) == 200

    _until(lambda: all(p.exists() for p in paths), 120, "not every TTS file appeared")
    assert all(_whole_wav(p) for p in paths)


@pytest.mark.timeout(120)
def test_a_full_queue_answers_503_and_loses_nothing_accepted(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    root = tmp_path / "root"
    env = _env(
        helpers,
        redis_url,
        root,
        DIGIHUMAN_JOBS__MAX_QUEUED='{"tts": 20}',
        DIGIHUMAN_JOBS__QUEUE_FULL_RETRY_AFTER_S="3",
    )
    api = procs.api(env)  # no worker yet: the queue fills

    rs = asyncio.run(_burst(api, 30, {"msg": "Queued speech."}))
    accepted = [r for r in rs if r.status_code == 200]
    refused = [r for r in rs if r.status_code == 503]
    assert len(accepted) == 20 and len(refused) == 10, [r.status_code for r in rs]
    for r in refused:
        assert r.headers["retry-after"] == "3"
        assert "tts queue is full" in r.json()["message"]
    # the v1 route is bounded by the same queue
    r = httpx.post(f"{api}/v1/tts", json={"text": "one more"}, timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "3"

    rc = redis.Redis.from_url(redis_url, decode_responses=True)
    assert len(list(rc.scan_iter("digihuman:job:*"))) == 20  # refused calls left nothing

    procs.worker("tts", env)  # the queue drains: every accepted job completes
    paths = [root / r.json()["message"] for r in accepted]
    _until(lambda: all(p.exists() for p in paths), 60, "an accepted job was lost")
    assert all(_whole_wav(p) for p in paths)
    for p in paths:
        assert rc.hget(f"digihuman:job:{p.stem}", "status") == "done"

    r = httpx.get(f"{api}/tts", params={"msg": "room again", "wait": "20"}, timeout=30)
    assert r.status_code == 200 and (root / r.json()["message"]).exists()


def _info(r: redis.Redis, section: str) -> dict[str, Any]:
    return dict(r.info(section))


def _blocked_waits(r: redis.Redis) -> int:
    """Connections blocked in XREAD: the API's waits (workers block in XREADGROUP)."""
    return sum(1 for c in r.client_list() if "b" in c["flags"] and c["cmd"] == "xread")


@pytest.mark.timeout(180)
def test_waiters_are_capped_and_cancelled_and_redis_stays_usable(
    redis_factory: Any, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    rp = redis_factory(args=("--maxclients", "50"))
    root = tmp_path / "root"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "a.wav").write_bytes(b"RIFF")
    env = _env(
        helpers,
        rp.url,
        root,
        DIGIHUMAN_API__REDIS_MAX_CONNECTIONS="8",
        DIGIHUMAN_API__MAX_WAITS="20",
        DIGIHUMAN_API__MAX_WAIT_S="60",
    )
    api = procs.api(env)
    rc = rp.client()
    c = httpx.Client(base_url=api, timeout=30)
    job = c.post("/v1/tts", json={"text": "Wait for me."}).json()["id"]  # no worker yet

    # 80 waiters at once
    results: list[httpx.Response] = []

    async def waiters() -> None:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=api, timeout=90, limits=limits) as ac:
            tasks = [ac.get(f"/v1/jobs/{job}", params={"wait": "50"}) for _ in range(80)]
            for fut in asyncio.as_completed(tasks):
                results.append(await fut)

    t = threading.Thread(target=lambda: asyncio.run(waiters()), daemon=True)
    t.start()
    _until(lambda: len(results) >= 60, 30, "the waiters past the cap were not refused")
    _until(lambda: _blocked_waits(rc) == 20, 30, "20 waits did not block")
    busy = [r for r in results if r.status_code == 503]
    assert len(busy) == 60 and len(results) == 60
    for r in busy:
        assert "waiting requests" in r.json()["message"] and int(r.headers["retry-after"]) >= 1

    # other requests are still served while 20 wait
    assert c.get(f"/v1/jobs/{job}").json()["status"] == "queued"
    other = c.post("/v1/tts", json={"text": "Still served."})
    assert other.status_code == 202
    assert c.get("/metrics").status_code == 200
    assert c.get("/readyz").json()["redis"] is True

    # a worker can still connect: it runs the job and the 20 waiters wake with the result
    procs.worker("tts", env)
    helpers.wait_ready(rp.url, "tts")
    t.join(timeout=60)
    assert not t.is_alive()
    woke = [r for r in results if r.status_code == 200]
    assert len(woke) == 20 and all(r.json()["status"] == "done" for r in woke)
    assert _info(rc, "stats")["rejected_connections"] == 0  # Redis never ran out of clients

    # a waiter whose client goes away stops waiting (and frees its slot and connection)
    asr_job = c.post("/v1/asr", json={"url": "tests/a.wav"}).json()["id"]  # no ASR worker
    port = int(api.rsplit(":", 1)[1])
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /v1/jobs/{asr_job}?wait=50 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    _until(lambda: _blocked_waits(rc) == 20, 30, "the waits did not block")
    t0 = time.monotonic()
    for s in socks:
        s.close()
    _until(lambda: _blocked_waits(rc) == 0, 15, "abandoned waits went on")
    assert time.monotonic() - t0 < 15  # far less than the 50 s they asked for
    again = c.get(f"/v1/jobs/{asr_job}", params={"wait": "0.2"})
    assert again.status_code == 200 and again.json()["status"] == "queued"  # slots are free
