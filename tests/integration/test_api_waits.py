"""Bounded waits against a real Redis with no worker: 504 for /asr, 202 for /tts?wait=."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from digihuman.api.app import create_app
from digihuman.config import RedisSettings, Settings
from digihuman.jobs.queue import GROUP, Keys, sync_client


@contextmanager
def _app(redis_url: str, root: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=root, redis_url=redis_url)
    settings.api.request_timeout_s = 0.5
    settings.api.rate_limit_per_minute = 0
    settings.jobs.kinds = ["tts", "asr"]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.timeout(30)
def test_waits_are_bounded_and_answer_json(redis_url: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    with _app(redis_url, root) as c:
        _check_waits(c, root)


def _check_waits(c: TestClient, root: Path) -> None:
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "tests" / "k.wav").write_bytes(b"RIFF")

    r = c.get("/asr", params={"url": "tests/k.wav"})  # no ASR worker: the wait runs out
    assert r.status_code == 504
    assert "not finished after 0.5 s" in r.json()["message"]

    r = c.get("/tts", params={"msg": "hello", "wait": "0.3"})
    assert r.status_code == 202 and r.json()["message"].startswith("tests/")

    job_id = r.json()["message"][len("tests/") : -len(".wav")]
    rec = c.get(f"/v1/jobs/{job_id}", params={"wait": "0.2"}).json()
    assert rec["status"] == "queued" and rec["kind"] == "tts"
    assert c.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404

    ready = c.get("/readyz")
    assert ready.status_code == 503 and "tts" in ready.json()["message"]
    metrics = c.get("/metrics").text
    assert 'digihuman_queue_depth{kind="tts"} 1.0' in metrics  # the /tts job waits
    assert 'digihuman_queue_depth{kind="asr"} 1.0' in metrics  # so does the /asr one


@pytest.mark.timeout(30)
def test_a_waiting_client_wakes_when_the_job_ends(redis_url: str, tmp_path: Path) -> None:
    """GET /v1/jobs/{id}?wait= returns as soon as a worker finishes, not at the timeout."""
    with _app(redis_url, tmp_path / "root") as c:
        _check_wake(c, redis_url)


def _check_wake(c: TestClient, redis_url: str) -> None:
    job_id = c.post("/v1/tts", json={"text": "hello"}).json()["id"]
    r = sync_client(RedisSettings(url=redis_url), socket_timeout=5)
    keys = Keys()

    def finish() -> None:  # play the worker: record the result and signal the end
        r.xgroup_create(keys.stream("tts"), GROUP, id="0", mkstream=True)
        r.hset(keys.record(job_id), mapping={"status": "done", "result": '{"path": "x"}'})
        r.xadd(keys.result(job_id), {"status": "done"})

    timer = threading.Timer(0.3, finish)
    timer.start()
    rec = c.get(f"/v1/jobs/{job_id}", params={"wait": "20"}).json()
    timer.join()
    assert rec["status"] == "done" and rec["result"] == {"path": "x"}
