"""Faults caused for real: kill -9 workers mid-job, Redis stopped under a live API, poison jobs.

Real redis-server, real ``digihuman worker`` and ``digihuman api`` processes; the diagnostic
``debug`` job kind sleeps and writes ``tests/debug/<job id>.json`` atomically.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from digihuman.config import RedisSettings
from digihuman.jobs.queue import JobQueue, Keys, sync_client


def _queue(url: str) -> JobQueue:
    return JobQueue(sync_client(RedisSettings(url=url), socket_timeout=10), Keys())


def _statuses(q: JobQueue, ids: list[str]) -> list[dict[str, str]]:
    pipe = q.r.pipeline(transaction=False)
    for i in ids:
        pipe.hgetall(q.keys.record(i))
    return list(pipe.execute())


@pytest.mark.timeout(120)
def test_kill_9_workers_mid_job_loses_nothing(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    root = tmp_path / "root"
    env = helpers.service_env(redis_url, root)
    for _ in range(3):
        procs.worker("debug", env, 2)
    helpers.wait_ready(redis_url, "debug", 3)
    q = _queue(redis_url)
    ids = q.enqueue_many("debug", [{"sleep": 0.1, "write": True} for _ in range(200)])

    kills = 0
    killed: set[int] = set()
    last_kill = time.monotonic()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        recs = _statuses(q, ids)
        if sum(r.get("status") == "done" for r in recs) == len(ids):
            break
        if kills < 4 and time.monotonic() - last_kill > 0.6:
            # a worker that is running a job right now (its record says so)
            pids = [int(r["worker"].split(":")[1]) for r in recs if r.get("status") == "running"]
            live = [p for p in pids if p not in killed]  # a killed one's jobs say running a while
            if live:
                pid = live[0]
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
                kills += 1
                last_kill = time.monotonic()
                procs.worker("debug", env, 2)  # a replacement joins
        time.sleep(0.05)

    recs = _statuses(q, ids)
    assert kills >= 3
    assert [r.get("status") for r in recs] == ["done"] * len(ids)
    # the interrupted jobs ran again elsewhere (attempt 2+), and nothing went to dead letters
    assert sum(int(r["attempts"]) > 1 for r in recs) >= 3
    assert q.dead_letters("debug") == []
    # exactly one output per job, named by its id
    outputs = sorted(p.name for p in (root / "tests" / "debug").iterdir() if p.name[0] != ".")
    assert outputs == sorted(f"{i}.json" for i in ids)
    assert q.depth("debug") == (0, 0)


@pytest.mark.timeout(120)
def test_redis_down_api_503_and_workers_resume(
    redis_proc: Any, redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    root = tmp_path / "root"
    env = helpers.service_env(redis_url, root, DIGIHUMAN_JOBS__KINDS='["debug"]')
    procs.worker("debug", env, 1)
    api = procs.api(env)
    helpers.wait_ready(redis_url, "debug")
    assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200

    redis_proc.stop()
    for path, params in [("/tts", {"msg": "hello"}), ("/asr", {"url": "tests/x.wav"})]:
        if path == "/asr":
            (root / "tests" / "x.wav").write_bytes(b"RIFF")
        r = httpx.get(f"{api}{path}", params=params, timeout=5)
        assert r.status_code == 503 and "Redis" in r.json()["message"]
    r = httpx.get(f"{api}/readyz", timeout=5)
    assert r.status_code == 503 and r.json()["message"]
    assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200
    time.sleep(1.5)  # the worker notices and backs off

    redis_proc.start()  # same port, empty (no persistence in this test)
    q = _queue(redis_url)
    job = q.enqueue("debug", {"write": True})
    rec = q.wait(job, 30)
    assert rec is not None and rec.status == "done"
    assert (root / "tests" / "debug" / f"{job}.json").exists()
    deadline = time.monotonic() + 15
    while httpx.get(f"{api}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "readyz did not recover"
        time.sleep(0.2)


@pytest.mark.timeout(60)
def test_poison_job_dead_letters_in_a_real_worker(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    env = helpers.service_env(redis_url, tmp_path / "root")
    procs.worker("debug", env, 1)
    helpers.wait_ready(redis_url, "debug")
    q = _queue(redis_url)
    bad = q.enqueue("debug", {"fail": True})
    good = q.enqueue_many("debug", [{} for _ in range(20)])
    assert q.wait(bad, 20).status == "dead"  # type: ignore[union-attr]
    assert all(q.wait(g, 20).status == "done" for g in good)  # type: ignore[union-attr]
    (dead,) = q.dead_letters("debug")
    assert dead["id"] == bad and "told to fail" in dead["error"] and dead["attempts"] == "3"


@pytest.mark.timeout(60)
def test_sigterm_stops_a_worker_cleanly(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    """SIGTERM during a job: the job is finished (within the grace period), then the exit."""
    env = helpers.service_env(redis_url, tmp_path / "root")
    w = procs.worker("debug", env, 1)
    helpers.wait_ready(redis_url, "debug")
    q = _queue(redis_url)
    job = q.enqueue("debug", {"sleep": 1.0, "write": True})
    deadline = time.monotonic() + 10
    while (q.get(job) or object()).__dict__.get("status") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=20) == 0
    rec = q.get(job)
    assert rec is not None and rec.status == "done" and rec.attempts == 1
    assert q.r.zcount(q.keys.workers("debug"), "-inf", "+inf") == 0  # it signed off
