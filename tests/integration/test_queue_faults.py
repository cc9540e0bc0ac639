"""The jobs layer under faults, caused for real: a real redis-server, real worker threads.

Each test reproduces one defect of issue [4c] (or the bounded queue of [4b]) and fails on the
code before its fix: stale completions after a freeze, reply timeouts, shutdown hand-backs,
orphans behind busy entries, consumer threads that die, queues without a bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from digihuman.config import JobSettings, RedisSettings
from digihuman.errors import QueueFull
from digihuman.jobs.queue import GROUP, JobQueue, Keys, max_queued_for, sync_client
from digihuman.jobs.worker import JobContext, Worker
from digihuman.storage import DataRoot

FAST = JobSettings(
    heartbeat_s=0.1, reclaim_after_s=1.0, max_attempts=3, block_ms=100, record_ttl_s=600
)


def _queue(url: str) -> JobQueue:
    return JobQueue(sync_client(RedisSettings(url=url), socket_timeout=30), Keys(), ttl_s=600)


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


# ---- 1. graceful shutdown --------------------------------------------------------------------


def test_graceful_stop_keeps_the_job_claimed_until_it_ends(redis_url: str, tmp_path: Path) -> None:
    """A job still running 2.5 x reclaim_after_s into the grace period is not taken over."""
    q = _queue(redis_url)
    starts: list[int] = []
    started = threading.Event()

    def slow(ctx: JobContext) -> dict[str, Any]:
        starts.append(ctx.attempt)
        started.set()
        time.sleep(2.5)
        return {}

    a = _worker(redis_url, tmp_path, slow, name="a")
    b = _worker(redis_url, tmp_path, slow, name="b")
    a.start()
    job = q.enqueue("t", {})
    assert started.wait(10)
    b.start()
    try:
        a.stop(grace_s=20)  # returns once the job ended
        rec = q.get(job)
    finally:
        b.stop(1)
    assert rec is not None and rec.status == "done" and rec.attempts == 1
    assert starts == [1]  # b never started it


# ---- 3. a completion whose reply was lost is sent again -------------------------------------


class ReplyDropper:
    """A TCP proxy in front of Redis that, once, lets a command containing ``pattern`` through
    and cuts the connection when Redis answers it: the command ran, the client saw the
    connection drop before the reply (a reply lost in the network)."""

    def __init__(self, redis_port: int, pattern: bytes) -> None:
        self.redis_port = redis_port
        self.pattern = pattern
        self.fired = threading.Event()
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/15"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            drop = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, drop), daemon=True).start()
            threading.Thread(target=self._down, args=(client, upstream, drop), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, drop: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if not self.fired.is_set() and self.pattern in data:
                    self.fired.set()
                    drop.set()
                upstream.sendall(data)

    def _down(self, client: socket.socket, upstream: socket.socket, drop: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if drop.is_set():  # the reply to the marked command: lose it
                    break
                client.sendall(data)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.srv.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_a_dead_letter_whose_reply_was_lost_is_written_once(redis_url: str, tmp_path: Path) -> None:
    q = _queue(redis_url)
    proxy = ReplyDropper(_port(redis_url), b"poison-7f3a")

    def handler(ctx: JobContext) -> dict[str, Any]:
        raise RuntimeError("poison-7f3a")

    cfg = FAST.model_copy(update={"max_attempts": 1})
    w = _worker(proxy.url(), tmp_path, handler, cfg)
    w.start()
    try:
        job = q.enqueue("t", {})
        rec = q.wait(job, 15)
        assert rec is not None and rec.status == "dead"
        _wait_for(lambda: q.depth("t") == (0, 0), what="the entry to be acknowledged")
    finally:
        w.stop(1)
        proxy.close()
    assert proxy.fired.is_set()  # the completion's reply was lost and it was sent again
    assert [d["id"] for d in q.dead_letters("t")] == [job]
    assert q.r.xlen(q.keys.result(job)) == 1


def test_a_retry_whose_reply_was_lost_enqueues_the_job_once(redis_url: str, tmp_path: Path) -> None:
    q = _queue(redis_url)
    proxy = ReplyDropper(_port(redis_url), b"transient-91c")
    runs: list[int] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("transient-91c")
        time.sleep(0.5)  # a second entry, if there were one, runs beside it
        return {}

    w = _worker(proxy.url(), tmp_path, handler, concurrency=2)
    w.start()
    try:
        job = q.enqueue("t", {})
        rec = q.wait(job, 15)
        _wait_for(lambda: q.depth("t") == (0, 0), what="the stream to empty")
        time.sleep(0.5)
    finally:
        w.stop(1)
        proxy.close()
    assert proxy.fired.is_set()
    assert rec is not None and rec.status == "done"
    assert sorted(runs) == [1, 2] and q.get(job).attempts == 2  # type: ignore[union-attr]


# ---- 4. orphans behind busy entries ---------------------------------------------------------


def test_an_orphan_behind_many_live_jobs_is_reclaimed(redis_url: str, tmp_path: Path) -> None:
    """12 live jobs ahead of a dead consumer's job in the pending list (XAUTOCLAIM scans ~10
    per call): the orphan is still taken over within a few reclaim periods."""
    q = _queue(redis_url)
    release = threading.Event()

    def handler(ctx: JobContext) -> dict[str, Any]:
        if ctx.payload.get("busy"):
            release.wait(60)
        return {}

    busy = _worker(redis_url, tmp_path, handler, concurrency=12, name="busy")
    busy.start()
    c = _worker(redis_url, tmp_path, handler, name="c")
    try:
        ids = [q.enqueue("t", {"busy": True}) for _ in range(12)]
        _wait_for(
            lambda: all((q.get(i) or Any).status == "running" for i in ids),  # type: ignore[union-attr]
            what="12 busy jobs running",
        )
        orphan = q.enqueue("t", {})
        got = q.r.xreadgroup(GROUP, "ghost", {q.keys.stream("t"): ">"}, count=1)
        assert got and got[0][1][0][1]["id"] == orphan  # held by a consumer that never returns
        c.start()
        rec = q.wait(orphan, 10)
        assert rec is not None and rec.status == "done"
        assert all(q.get(i).status == "running" for i in ids)  # type: ignore[union-attr]
    finally:
        release.set()
        busy.stop(5)
        c.stop(1)


# ---- 5. job threads that die ----------------------------------------------------------------


def test_an_error_outside_the_handler_dead_letters_the_job_and_the_thread_goes_on(
    redis_url: str, tmp_path: Path
) -> None:
    import numpy as np

    q = _queue(redis_url)

    def handler(ctx: JobContext) -> dict[str, Any]:
        if ctx.payload.get("numpy"):
            return {"score": np.float32(0.5)}  # not JSON: the completion itself fails
        return {"ok": True}

    w = _worker(redis_url, tmp_path, handler)
    w.start()
    try:
        bad = q.enqueue("t", {"numpy": True})
        good = q.enqueue("t", {})
        bad_rec, good_rec = q.wait(bad, 10), q.wait(good, 10)
        assert w.ready and not w.dead_consumers
    finally:
        w.stop(1)
    assert bad_rec is not None and bad_rec.status == "dead"
    assert "float32 is not JSON serializable" in (bad_rec.error or "")
    assert [d["id"] for d in q.dead_letters("t")] == [bad]
    assert good_rec is not None and good_rec.status == "done"


def test_a_worker_whose_job_thread_died_is_not_ready(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    """A handler that raises SystemExit ends its thread: the job is dead-lettered, the worker
    leaves the live set for ``unready`` and ``/readyz`` answers 503."""
    import httpx

    q = _queue(redis_url)

    def handler(ctx: JobContext) -> dict[str, Any]:
        raise SystemExit("a library called sys.exit()")

    env = helpers.service_env(redis_url, tmp_path / "root", DIGIHUMAN_JOBS__KINDS='["t"]')
    api = procs.api(env)
    w = _worker(redis_url, tmp_path, handler, name="w")
    w.start()
    try:
        helpers.wait_ready(redis_url, "t")
        assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
        job = q.enqueue("t", {})
        rec = q.wait(job, 10)
        assert rec is not None and rec.status == "dead"
        assert "job thread died: SystemExit: a library called sys.exit()" in (rec.error or "")
        assert not w.ready and list(w.dead_consumers) == ["w:0"]
        _wait_for(lambda: q.r.zscore(q.keys.workers("t"), "w") is None, what="w to leave")
        assert q.r.zscore(q.keys.unready("t"), "w") is not None
        r = httpx.get(f"{api}/readyz", timeout=5)
        assert r.status_code == 503 and r.json()["unready"] == {"t": ["w"]}
        assert "1 t worker(s) with a dead job thread" in r.json()["message"]
    finally:
        w.stop(1)


# ---- also: the dead-letter stream is bounded --------------------------------------------------


def test_the_dead_letter_stream_is_trimmed(redis_url: str, tmp_path: Path) -> None:
    q = _queue(redis_url)

    def handler(ctx: JobContext) -> dict[str, Any]:
        raise RuntimeError("always")

    cfg = FAST.model_copy(update={"max_attempts": 1, "dead_letter_maxlen": 10, "prefetch": 16})
    w = _worker(redis_url, tmp_path, handler, cfg)
    w.start()
    try:
        ids = q.enqueue_many("t", [{} for _ in range(300)])
        _wait_for(lambda: q.depth("t") == (0, 0), what="300 jobs to end")
    finally:
        w.stop(1)
    n = q.r.xlen(q.keys.dead("t"))
    assert 10 <= n <= 150  # approximate trimming drops whole nodes of ~100 entries
    assert q.dead_letters("t")[-1]["id"] == ids[-1]


# ---- real worker processes: a freeze past reclaim_after_s (SIGSTOP), SIGKILL ----------------


def _traces(root: Path) -> list[tuple[str, str, int, int]]:
    """(event, job, attempt, pid) lines the debug handler appended, over all processes."""
    out = []
    for f in sorted((root / "tests" / "debug").glob("trace-*.log")):
        for line in f.read_text().splitlines():
            ev, job, attempt, pid, _t = line.split()
            out.append((ev, job, int(attempt), int(pid)))
    return out


def test_a_frozen_worker_cannot_overwrite_the_outcome(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    """Worker a is frozen (SIGSTOP) mid-job; b takes both jobs over and finishes them; a wakes
    up and its failure (``failed``) and its retry arrive: both refused, counted, nothing
    re-queued, the records stay ``done``."""
    root = tmp_path / "root"
    env = helpers.service_env(redis_url, root)
    a = procs.worker("debug", env, 2)
    helpers.wait_ready(redis_url, "debug")
    q = _queue(redis_url)
    common = {"sleep": 1.5, "trace": True}
    rejected = q.enqueue("debug", {**common, "reject_on_attempt": 1})
    retried = q.enqueue("debug", {**common, "fail_on_attempt": 1})
    jobs = [rejected, retried]
    _wait_for(lambda: all(q.get(j).status == "running" for j in jobs), what="a to start both")  # type: ignore[union-attr]
    os.kill(a.pid, signal.SIGSTOP)
    try:
        procs.worker("debug", env, 2)
        _wait_for(lambda: all(q.get(j).status == "done" for j in jobs), 40, "b to finish both")  # type: ignore[union-attr]
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # a's handlers end at once (their sleep is over) and send their outcomes
    _wait_for(
        lambda: sum(e.startswith("end") and pid == a.pid for e, _, _, pid in _traces(root)) == 2,
        what="a's handlers to end",
    )
    deadline = time.monotonic() + 5  # time for a's outcomes to reach Redis (and be refused)
    while time.monotonic() < deadline and not all(
        q.r.hget(q.keys.record(j), "stale") for j in jobs
    ):
        time.sleep(0.05)
    time.sleep(1.0)  # a re-queued job, if any, would start again by now
    for j in jobs:
        rec = q.get(j)
        assert rec is not None and rec.status == "done" and rec.attempts == 2, rec
        assert rec.result is not None and rec.result["attempt"] == 2
        assert q.r.hget(q.keys.record(j), "stale") == "1"  # one stale completion, counted
        assert q.r.xlen(q.keys.result(j)) == 1  # one completion recorded
        starts = [x for x in _traces(root) if x[0] == "start" and x[1] == j]
        assert sorted(s[2] for s in starts) == [1, 2]
    assert q.depth("debug") == (0, 0) and q.dead_letters("debug") == []


def test_shutdown_after_a_takeover_hands_back_nothing_it_lost(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    """a is frozen mid-job and b takes it over; a wakes up and gets SIGTERM with a short grace:
    it must not re-add, acknowledge or give an attempt back for b's job (a third run)."""
    root = tmp_path / "root"
    env = helpers.service_env(redis_url, root, DIGIHUMAN_JOBS__SHUTDOWN_GRACE_S="0.3")
    a = procs.worker("debug", env, 1)
    helpers.wait_ready(redis_url, "debug")
    q = _queue(redis_url)
    job = q.enqueue("debug", {"sleep": 4.0, "trace": True})
    _wait_for(lambda: q.get(job).status == "running", what="a to start")  # type: ignore[union-attr]
    os.kill(a.pid, signal.SIGSTOP)
    try:
        procs.worker("debug", env, 1)
        _wait_for(lambda: q.get(job).attempts == 2, 40, "b to take it over")  # type: ignore[union-attr]
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a.send_signal(signal.SIGTERM)  # its job thread is still sleeping: the grace runs out
    assert a.wait(timeout=45) == 0
    rec = q.wait(job, 20)
    assert rec is not None and rec.status == "done" and rec.attempts == 2
    time.sleep(1.0)  # a third run, if it were handed back, would start by now
    starts = [x for x in _traces(root) if x[0] == "start"]
    assert sorted(s[2] for s in starts) == [1, 2]
    assert q.depth("debug") == (0, 0)


def test_temp_files_of_a_killed_attempt_are_swept_at_worker_start(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    root = tmp_path / "root"
    env = helpers.service_env(
        redis_url,
        root,
        DIGIHUMAN_JOBS__MAX_ATTEMPTS="1",  # the killed job is not run again (no own clean-up)
        DIGIHUMAN_JOBS__TEMP_SWEEP_AFTER_S="1",
    )
    a = procs.worker("debug", env, 1)
    helpers.wait_ready(redis_url, "debug")
    q = _queue(redis_url)
    job = q.enqueue("debug", {"write": True, "write_sleep": 30})
    out = root / "tests" / "debug"
    _wait_for(lambda: out.is_dir() and any(out.glob(f".{job}.*")), what="the temp file")
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    (temp,) = out.glob(f".{job}.*")
    keep = out / "notes.txt"  # not a temp name: never touched
    keep.write_text("mine")
    os.utime(keep, (time.time() - 3600, time.time() - 3600))
    time.sleep(1.2)
    procs.worker("debug", env, 1)
    _wait_for(lambda: not temp.exists(), what="the sweep")
    assert keep.exists()
    rec = q.wait(job, 20)
    assert rec is not None and rec.status == "dead"  # reclaimed: gave up after 1 attempt
