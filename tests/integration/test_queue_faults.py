"""The jobs layer under faults, caused for real: a real redis-server, real worker threads.

Each test reproduces one defect of issue [4c] (or the bounded queue of [4b]) and fails on the
code before its fix: stale completions after a freeze, reply timeouts, shutdown hand-backs,
orphans behind busy entries, consumer threads that die, queues without a bound.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from digihuman.config import JobSettings, RedisSettings
from digihuman.errors import QueueFull
from digihuman.jobs.queue import JobQueue, Keys, max_queued_for, sync_client
from digihuman.jobs.worker import JobContext, Worker
from digihuman.storage import DataRoot

FAST = JobSettings(
    heartbeat_s=0.1, reclaim_after_s=1.0, max_attempts=3, block_ms=100, record_ttl_s=600
)


def _queue(url: str) -> JobQueue:
    return JobQueue(sync_client(RedisSettings(url=url), socket_timeout=10), Keys(), ttl_s=600)


def _worker(url: str, root: Path, handler: Any, cfg: JobSettings = FAST, **kw: Any) -> Worker:
    client = sync_client(RedisSettings(url=url), socket_timeout=5)
    return Worker(client, Keys(), "t", handler, data_root=DataRoot(root), settings=cfg, **kw)


def _wait_for(cond: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---- bounded queues ([4b] 1) ----------------------------------------------------------------


def test_a_full_queue_refuses_atomically_and_frees_on_completion(
    redis_url: str, tmp_path: Path
) -> None:
    """16 producers race for 25 places: exactly 25 accepted, the rest QueueFull with a
    Retry-After; retries keep their place; finished jobs free theirs."""
    q = _queue(redis_url)
    accepted: list[str] = []
    refused: list[QueueFull] = []
    lock = threading.Lock()

    def produce() -> None:
        pq = _queue(redis_url)
        for _ in range(10):
            try:
                job = pq.enqueue("t", {}, max_queued=25, retry_after_s=7.0)
                with lock:
                    accepted.append(job)
            except QueueFull as exc:
                with lock:
                    refused.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 25 and len(refused) == 160 - 25
    assert refused[0].retry_after_s == 7.0 and refused[0].limit == 25 and refused[0].kind == "t"
    assert refused[0].http_status == 503 and "retry in 7 s" in str(refused[0])
    assert q.depth("t")[0] == 25

    fail_once: set[str] = set()

    def handler(ctx: JobContext) -> dict[str, Any]:
        if ctx.job_id not in fail_once:  # every job is retried once: it keeps its place
            fail_once.add(ctx.job_id)
            raise RuntimeError("transient")
        return {}

    w = _worker(redis_url, tmp_path, handler)
    w.start()
    try:
        recs = [q.wait(j, 20) for j in accepted]
    finally:
        w.stop(1)
    assert [r.status for r in recs if r] == ["done"] * 25
    assert all(r is not None and r.attempts == 2 for r in recs)
    assert q.depth("t") == (0, 0)
    for _ in range(25):  # all places are free again
        q.enqueue("t", {}, max_queued=25)
    with pytest.raises(QueueFull):
        q.enqueue("t", {}, max_queued=25)
    assert q.enqueue("t", {}) and q.depth("t")[0] == 26  # unbounded without max_queued


def test_enqueue_of_an_existing_job_id_adds_nothing(redis_url: str) -> None:
    q = _queue(redis_url)
    job = q.enqueue("t", {"x": 1})
    assert q.enqueue("t", {"x": 2}, job_id=job) == job  # a producer re-sending after a timeout
    assert q.depth("t")[0] == 1
    rec = q.r.hget(q.keys.record(job), "payload")
    assert rec == '{"x":1}'


def test_max_queued_for_reads_the_settings() -> None:
    cfg = JobSettings(max_queued={"tts": 3}, max_queued_default=9)
    assert max_queued_for(cfg, "tts") == 3 and max_queued_for(cfg, "render") == 9
