"""The Redis Streams queue against a real redis-server (workers as threads in this process)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from digihuman.config import JobSettings, RedisSettings
from digihuman.errors import InputError
from digihuman.jobs.handlers import make_debug
from digihuman.jobs.queue import GROUP, JobQueue, Keys, sync_client
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


def test_enqueue_run_record_and_ttl(redis_url: str, tmp_path: Path) -> None:
    q = _queue(redis_url)
    seen: list[dict[str, Any]] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        seen.append(ctx.payload)
        ctx.progress(0.5, "half way")
        return {"echo": ctx.payload["x"]}

    w = _worker(redis_url, tmp_path, handler)
    w.start()
    try:
        ids = [q.enqueue("t", {"x": i}) for i in range(20)]
        recs = [q.wait(i, 10) for i in ids]
    finally:
        w.stop(1)
    assert [r.status for r in recs if r] == ["done"] * 20
    assert [r.result for r in recs if r] == [{"echo": i} for i in range(20)]
    assert all(r is not None and r.attempts == 1 and r.progress == 1.0 for r in recs)
    assert sorted(p["x"] for p in seen) == list(range(20))
    ttl = q.r.ttl(q.keys.record(ids[0]))
    assert 0 < ttl <= 600
    assert q.depth("t") == (0, 0)  # acknowledged and deleted: nothing left behind


def test_heartbeat_keeps_a_long_job_claimed(redis_url: str, tmp_path: Path) -> None:
    """A job running 2.5x longer than reclaim_after_s is never taken over by another worker."""
    q = _queue(redis_url)
    calls: list[str] = []
    lock = threading.Lock()

    def slow(ctx: JobContext) -> dict[str, Any]:
        with lock:
            calls.append(ctx.job_id)
        time.sleep(2.5)
        return {}

    a = _worker(redis_url, tmp_path, slow, name="a")
    b = _worker(redis_url, tmp_path, slow, name="b")
    a.start()
    job = q.enqueue("t", {})
    time.sleep(0.3)  # a has it
    b.start()
    try:
        rec = q.wait(job, 10)
    finally:
        a.stop(1)
        b.stop(1)
    assert rec is not None and rec.status == "done" and rec.attempts == 1
    assert calls == [job]


def test_a_silent_consumer_is_reclaimed(redis_url: str, tmp_path: Path) -> None:
    """A consumer that took a job and went silent loses it; a live worker finishes it."""
    q = _queue(redis_url)
    job = q.enqueue("t", {"x": 1})
    r = q.r
    r.xgroup_create(q.keys.stream("t"), GROUP, id="0", mkstream=True)
    got = r.xreadgroup(GROUP, "ghost", {q.keys.stream("t"): ">"}, count=1)
    assert got and got[0][1][0][1]["id"] == job  # the ghost holds it and never acks
    w = _worker(redis_url, tmp_path, lambda ctx: {"by": "live"})
    w.start()
    try:
        rec = q.wait(job, 10)
    finally:
        w.stop(1)
    assert rec is not None and rec.status == "done" and rec.result == {"by": "live"}
    assert q.depth("t") == (0, 0)


def test_poison_job_goes_to_dead_letters_and_queue_keeps_flowing(
    redis_url: str, tmp_path: Path
) -> None:
    q = _queue(redis_url)

    def handler(ctx: JobContext) -> dict[str, Any]:
        if ctx.payload.get("poison"):
            raise RuntimeError("this job always breaks")
        return {"ok": True}

    w = _worker(redis_url, tmp_path, handler)
    w.start()
    try:
        bad = q.enqueue("t", {"poison": True})
        good = [q.enqueue("t", {"i": i}) for i in range(10)]
        bad_rec = q.wait(bad, 10)
        good_recs = [q.wait(g, 10) for g in good]
    finally:
        w.stop(1)
    assert bad_rec is not None and bad_rec.status == "dead"
    assert bad_rec.attempts == 3 and "always breaks" in (bad_rec.error or "")
    dead = q.dead_letters("t")
    assert [d["id"] for d in dead] == [bad]
    assert "always breaks" in dead[0]["error"] and dead[0]["attempts"] == "3"
    assert all(g is not None and g.status == "done" for g in good_recs)


def test_user_errors_fail_at_once_without_retry(redis_url: str, tmp_path: Path) -> None:
    q = _queue(redis_url)
    calls = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        calls.append(1)
        raise InputError("the audio has no samples")

    w = _worker(redis_url, tmp_path, handler)
    w.start()
    try:
        rec = q.wait(q.enqueue("t", {}), 10)
    finally:
        w.stop(1)
    assert rec is not None and rec.status == "failed" and rec.attempts == 1
    assert rec.error == "the audio has no samples" and rec.error_status == 422
    assert calls == [1] and q.dead_letters("t") == []


def test_shutdown_hands_back_a_running_job(redis_url: str, tmp_path: Path) -> None:
    q = _queue(redis_url)
    started = threading.Event()

    def slow(ctx: JobContext) -> dict[str, Any]:
        started.set()
        time.sleep(3)
        return {"by": "slow"}

    a = _worker(redis_url, tmp_path, slow, name="a")
    a.start()
    job = q.enqueue("t", {})
    assert started.wait(5)
    a.stop(grace_s=0.2)  # does not finish in time: handed back, not counted as an attempt
    rec = q.get(job)
    assert rec is not None and rec.status == "queued" and rec.attempts == 0
    b = _worker(redis_url, tmp_path, lambda ctx: {"by": "b"}, name="b")
    b.start()
    try:
        rec = q.wait(job, 10)
    finally:
        b.stop(1)
    assert rec is not None and rec.status == "done" and rec.result == {"by": "b"}


def test_duplicate_delivery_of_a_finished_job_is_skipped(redis_url: str, tmp_path: Path) -> None:
    q = _queue(redis_url)
    calls = []
    w = _worker(redis_url, tmp_path, lambda ctx: calls.append(1) or {})
    w.start()
    try:
        job = q.enqueue("t", {})
        assert q.wait(job, 10).status == "done"  # type: ignore[union-attr]
        # the same job delivered again (e.g. a zombie's hand back): acknowledged, not rerun
        q.r.xadd(q.keys.stream("t"), {"id": job, "data": "{}"})
        marker = q.enqueue("t", {})
        assert q.wait(marker, 10).status == "done"  # type: ignore[union-attr]
    finally:
        w.stop(1)
    assert len(calls) == 2 and q.depth("t") == (0, 0)


def test_debug_handler_output_is_idempotent(redis_url: str, tmp_path: Path) -> None:
    root = DataRoot(tmp_path / "root").ensure()
    handler = make_debug(None)  # type: ignore[arg-type]  # the debug kind reads no settings
    ctx = JobContext("job-1", "debug", {"write": True}, 1, root)
    stale = root.tests / "debug" / ".job-1.abc.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("half")
    import os

    os.utime(stale, (time.time() - 10, time.time() - 10))
    first = handler(ctx)
    second = handler(ctx)
    assert first["path"] == second["path"] == "tests/debug/job-1.json"
    assert sorted(p.name for p in (root.tests / "debug").iterdir()) == ["job-1.json"]


def test_no_acknowledged_job_is_lost_across_a_redis_crash(
    redis_factory: Any, tmp_path: Path
) -> None:
    """AOF on (fsync always): kill -9 Redis after enqueueing; every job survives and runs."""
    aof_redis = redis_factory(aof=True)
    q = _queue(aof_redis.url)
    ids = [q.enqueue("t", {"i": i}) for i in range(50)]
    aof_redis.kill()
    aof_redis.start()
    q = _queue(aof_redis.url)
    w = _worker(aof_redis.url, tmp_path, lambda ctx: {"i": ctx.payload["i"]})
    w.start()
    try:
        recs = [q.wait(i, 10) for i in ids]
    finally:
        w.stop(1)
    assert [r.result["i"] for r in recs if r and r.result] == list(range(50))


def test_a_job_running_across_a_redis_restart_completes(redis_factory: Any, tmp_path: Path) -> None:
    """Redis crashes while a job runs: the worker keeps the result and delivers it on return."""
    r = redis_factory(aof=True)
    q = _queue(r.url)
    started = threading.Event()

    def slow(ctx: JobContext) -> dict[str, Any]:
        started.set()
        time.sleep(1.5)
        return {"survived": True}

    w = _worker(r.url, tmp_path, slow)
    w.start()
    try:
        job = q.enqueue("t", {})
        assert started.wait(5)
        r.kill()
        time.sleep(0.5)
        r.start()
        rec = _queue(r.url).wait(job, 20)
    finally:
        w.stop(1)
    assert rec is not None and rec.status == "done" and rec.result == {"survived": True}
    assert rec.attempts == 1


def test_render_job_through_the_queue(redis_url: str, tmp_path: Path) -> None:
    """A render job (fake lip-sync engine, real portrait, real speech) → one MP4 named by id."""
    import shutil

    from digihuman.config import Settings
    from digihuman.jobs.handlers import make_handler
    from digihuman.media.audio import load_audio, save_wav
    from digihuman.media.video import probe

    assets = Path(__file__).resolve().parents[2] / "src" / "digihuman" / "assets"
    root = DataRoot(tmp_path / "root").ensure()
    shutil.copy(assets / "portrait.jpg", root.root / "data" / "me.jpg")
    save_wav(root.tests / "hello.wav", load_audio(assets / "speech_en.wav")[:16000])
    settings = Settings(data_dir=root.root)
    settings.lipsync.engine = "fake"
    w = _worker(redis_url, root.root, make_handler("render", settings))
    q = _queue(redis_url)
    w.start()
    try:
        job = q.enqueue("t", {"source": "data/me.jpg", "audio": "tests/hello.wav"})
        rec = q.wait(job, 60)
    finally:
        w.stop(1)
    assert rec is not None and rec.status == "done", rec
    assert rec.result is not None and rec.result["path"] == f"results/output/{job}.mp4"
    info = probe(root.root / rec.result["path"])
    assert info.has_video and info.has_audio and abs(info.duration - 1.0) < 0.15
    assert [p.name for p in root.output.iterdir()] == [f"{job}.mp4"]
