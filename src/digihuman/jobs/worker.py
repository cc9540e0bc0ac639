"""The worker runner: consumer group reads, heartbeat, reclaim, retries, dead letters.

One :class:`Worker` serves one job kind with ``concurrency`` threads, each a consumer in the
kind's group. A heartbeat thread re-claims (``XCLAIM ... JUSTID``) every job this worker holds,
which resets its idle time, and refreshes the worker's entry in ``P workers:<kind>`` (what
``/readyz`` looks at). A job idle longer than ``reclaim_after_s`` belongs to a worker that went
silent (killed, frozen, cut off): any worker takes it over with ``XAUTOCLAIM``.

Outcomes: the handler's result → ``done``; a :class:`~digihuman.errors.DigihumanError` (bad input,
missing weights, ...) → ``failed`` at once (retrying cannot help); any other exception → retried
until ``max_attempts``, then the job goes to the dead-letter stream with its error. Attempts are
counted when a job starts, so a job that kills its worker also ends in the dead-letter stream.

When Redis goes away the worker backs off (0.1 s doubling to 5 s) and resumes when it returns; a
finished job's completion is retried until Redis accepts it. SIGTERM: stop reading, finish the
running jobs for up to ``shutdown_grace_s``, hand back the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from digihuman.config import JobSettings
from digihuman.errors import DigihumanError
from digihuman.jobs.queue import GROUP, Keys, decode, encode
from digihuman.observability import JOB_SECONDS, JOBS_FINISHED, JOBS_RECLAIMED
from digihuman.storage import DataRoot

log = logging.getLogger(__name__)

# Tiny jobs are read several per round trip: when a worker's jobs take under FAST_JOB_S on
# average, it reads up to FAST_PREFETCH at a time (held entries stay claimed by the heartbeat, so
# the cost is only that they wait behind each other — milliseconds for such jobs). Slow jobs keep
# the configured prefetch (1 by default) so that idle workers get them.
FAST_JOB_S = 0.005
FAST_PREFETCH = 16

# start a job unless it already ended: returns {previous status, attempts}
_START = """
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'done' or st == 'failed' or st == 'dead' then return {st, -1} end
local a = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'updated', ARGV[2],
           'kind', ARGV[4], 'message', 'running')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {st or '', a}
"""


@dataclass
class JobContext:
    """What a handler gets: the job and a progress callback (fraction in [0, 1], message)."""

    job_id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    data_root: DataRoot
    progress: Callable[[float, str], None] = field(default=lambda f, m: None)


Handler = Callable[[JobContext], dict[str, Any]]


class _Stop(Exception):
    pass


@dataclass
class _Held:
    """A stream entry this worker holds: its job, the consumer that owns it, whether it ran."""

    job_id: str
    consumer: str
    started: bool = False


class Worker:
    def __init__(
        self,
        client: Any,
        keys: Keys,
        kind: str,
        handler: Handler,
        *,
        data_root: DataRoot,
        settings: JobSettings,
        concurrency: int = 1,
        name: str | None = None,
    ) -> None:
        self.r = client
        self.keys = keys
        self.kind = kind
        self.handler = handler
        self.data_root = data_root
        self.cfg = settings
        self.concurrency = max(1, concurrency)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{kind}"
        self.stream = keys.stream(kind)
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}  # stream entry id -> what the heartbeat keeps
        self._start = client.register_script(_START)
        self._threads: list[threading.Thread] = []
        self._group_ready = False
        self._job_s: float | None = None  # moving average of handler time (adaptive prefetch)

    def _read_count(self) -> int:
        if self._job_s is not None and self._job_s < FAST_JOB_S:
            return max(self.cfg.prefetch, FAST_PREFETCH)
        return self.cfg.prefetch

    def _observe(self, seconds: float) -> None:
        JOB_SECONDS.labels(self.kind).observe(seconds)
        prev = self._job_s
        self._job_s = seconds if prev is None else 0.8 * prev + 0.2 * seconds

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.concurrency):
            t = threading.Thread(
                target=self._loop, args=(f"{self.name}:{i}",), name=f"job-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        hb = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        hb.start()
        self._threads.append(hb)
        log.info("%s worker %s: %d thread(s)", self.kind, self.name, self.concurrency)

    def stop(self, grace_s: float | None = None) -> None:
        """Stop reading, let running jobs finish for ``grace_s``, hand back whatever is left."""
        self.stop_event.set()
        deadline = time.monotonic() + (self.cfg.shutdown_grace_s if grace_s is None else grace_s)
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = dict(self._held)
        for entry_id, held in left.items():
            self._hand_back(entry_id, held.job_id, None)
        with contextlib.suppress(Exception):
            self.r.zrem(self.keys.workers(self.kind), self.name)
        log.info("%s worker %s stopped (%d job(s) handed back)", self.kind, self.name, len(left))

    def run_forever(self) -> None:
        self.start()
        while not self.stop_event.wait(0.5):
            pass

    # ---- consuming -------------------------------------------------------------------------
    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _loop(self, consumer: str) -> None:
        import redis

        backoff = 0.1
        next_reclaim = 0.0
        reclaim_ms = int(self.cfg.reclaim_after_s * 1000)
        while not self.stop_event.is_set():
            try:
                self._ensure_group()
                entries: list[tuple[str, dict[str, str]]] = []
                now = time.monotonic()
                if now >= next_reclaim:
                    next_reclaim = now + max(0.05, self.cfg.reclaim_after_s / 4)
                    res = self.r.xautoclaim(
                        self.stream, GROUP, consumer, reclaim_ms, "0-0", count=self.cfg.prefetch
                    )
                    entries = [e for e in res[1] if e and e[1]]
                    if entries:
                        JOBS_RECLAIMED.labels(self.kind).inc(len(entries))
                        log.warning(
                            "%s: took over %d job(s) from a silent worker", self.kind, len(entries)
                        )
                if not entries:
                    got = self.r.xreadgroup(
                        GROUP,
                        consumer,
                        {self.stream: ">"},
                        count=self._read_count(),
                        block=self.cfg.block_ms,
                    )
                    entries = got[0][1] if got else []
                with self._lock:
                    for entry_id, fields in entries:
                        self._held[entry_id] = _Held(fields.get("id", ""), consumer)
                try:
                    for n, (entry_id, fields) in enumerate(entries):
                        if self.stop_event.is_set():
                            for eid, f in entries[n:]:
                                self._hand_back(eid, f.get("id", ""), f)
                            break
                        self._process(entry_id, fields)
                finally:
                    # entries not finished (Redis went away mid-batch) stop being kept alive
                    # by the heartbeat, so that they go idle and are reclaimed
                    for entry_id, _ in entries:
                        self._release(entry_id)
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError, _Stop) as exc:
                if self.stop_event.is_set():
                    break
                log.warning(
                    "%s: redis unavailable (%s); retrying in %.1fs", self.kind, exc, backoff
                )
                self._group_ready = False
                self.stop_event.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._group_ready = False
                    continue
                log.exception("%s: redis refused a command", self.kind)
                self.stop_event.wait(1.0)

    def _process(self, entry_id: str, fields: dict[str, str]) -> None:
        job_id = fields.get("id", "")
        try:
            payload = decode(fields.get("data")) or {}
            if not isinstance(payload, dict):
                raise ValueError("payload is not a JSON object")
        except ValueError as exc:
            self._finish(entry_id, job_id, "dead", error=f"unreadable job: {exc}", dead=fields)
            return
        rec = self.keys.record(job_id)
        with self._lock:
            if entry_id in self._held:
                self._held[entry_id].started = True
        _prev, attempts = self._start(
            keys=[rec],
            args=[self.name, f"{time.time():.6f}", self.cfg.record_ttl_s, self.kind],
        )
        attempts = int(attempts)
        if attempts < 0:  # already ended (a duplicate delivery): just acknowledge it
            self._finish(entry_id, job_id, None)
            return
        if attempts > self.cfg.max_attempts:
            last = self.r.hget(rec, "error") or "its worker died while running it"
            err = f"gave up after {attempts - 1} attempt(s): {last}"
            self._finish(entry_id, job_id, "dead", error=err, dead=fields, attempts=attempts - 1)
            return
        ctx = JobContext(
            job_id=job_id,
            kind=self.kind,
            payload=payload,
            attempt=attempts,
            data_root=self.data_root,
            progress=self._progress_cb(rec),
        )
        t0 = time.perf_counter()
        try:
            result = self.handler(ctx)
        except DigihumanError as exc:
            self._observe(time.perf_counter() - t0)
            log.info("%s job %s failed: %s", self.kind, job_id, exc)
            self._finish(entry_id, job_id, "failed", error=str(exc), error_status=exc.http_status)
            return
        except Exception as exc:
            self._observe(time.perf_counter() - t0)
            err = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            if attempts >= self.cfg.max_attempts:
                log.error("%s job %s dead after %d attempts: %s", self.kind, job_id, attempts, err)
                self._finish(entry_id, job_id, "dead", error=err, dead=fields, attempts=attempts)
            else:
                log.warning("%s job %s attempt %d failed: %s", self.kind, job_id, attempts, err)
                self._retry(entry_id, job_id, fields, err)
            return
        self._observe(time.perf_counter() - t0)
        self._finish(entry_id, job_id, "done", result=result)

    def _progress_cb(self, rec: str) -> Callable[[float, str], None]:
        last = [0.0]

        def progress(fraction: float, message: str = "") -> None:
            now = time.monotonic()
            if now - last[0] < 0.25 and fraction < 1.0:
                return
            last[0] = now
            try:
                self.r.hset(
                    rec,
                    mapping={
                        "progress": f"{max(0.0, min(1.0, fraction)):.4f}",
                        "message": message[:200],
                        "updated": f"{time.time():.6f}",
                    },
                )
            except Exception as exc:  # progress is best effort
                log.debug("progress update lost: %s", exc)

        return progress

    # ---- completion (retried until Redis takes it) -----------------------------------------
    def _with_redis(self, what: str, fn: Callable[[], Any]) -> None:
        import redis

        backoff = 0.1
        while True:
            try:
                fn()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self.stop_event.is_set() and backoff >= 1.0:
                    log.warning("%s: gave up on %s at shutdown (%s)", self.kind, what, exc)
                    raise _Stop() from exc
                log.warning("%s: %s waits for redis (%s)", self.kind, what, exc)
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)

    def _release(self, entry_id: str) -> None:
        with self._lock:
            self._held.pop(entry_id, None)

    def _finish(
        self,
        entry_id: str,
        job_id: str,
        status: str | None,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        error_status: int | None = None,
        dead: dict[str, str] | None = None,
        attempts: int | None = None,
    ) -> None:
        now = f"{time.time():.6f}"

        def go() -> None:
            pipe = self.r.pipeline(transaction=True)
            if status is not None:
                rec = self.keys.record(job_id)
                fields = {"status": status, "updated": now, "finished": now}
                if status == "done":
                    fields.update(progress="1", message="done", result=encode(result or {}))
                else:
                    fields.update(message=status, error=error or "")
                    if error_status is not None:
                        fields["error_status"] = str(error_status)
                pipe.hset(rec, mapping=fields)
                pipe.expire(rec, self.cfg.record_ttl_s)
                if dead is not None:
                    pipe.xadd(
                        self.keys.dead(self.kind),
                        {
                            "id": job_id,
                            "kind": self.kind,
                            "data": dead.get("data", ""),
                            "error": error or "",
                            "attempts": str(attempts or 0),
                            "t": now,
                        },
                    )
                res = self.keys.result(job_id)
                pipe.xadd(res, {"status": status}, maxlen=4, approximate=False)
                pipe.expire(res, self.cfg.record_ttl_s)
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            pipe.execute()

        try:
            self._with_redis(f"finishing job {job_id}", go)
        finally:
            self._release(entry_id)
        if status is not None:
            JOBS_FINISHED.labels(self.kind, status).inc()

    def _retry(self, entry_id: str, job_id: str, fields: dict[str, str], error: str) -> None:
        def go() -> None:
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(
                self.keys.record(job_id),
                mapping={"status": "queued", "message": "retrying", "error": error},
            )
            pipe.xadd(self.stream, {k: v for k, v in fields.items()})
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            pipe.execute()

        try:
            self._with_redis(f"retrying job {job_id}", go)
        finally:
            self._release(entry_id)
        JOBS_FINISHED.labels(self.kind, "retried").inc()

    def _hand_back(self, entry_id: str, job_id: str, fields: dict[str, str] | None) -> None:
        """Put a job back on the stream for another worker (shutdown); not counted an attempt."""
        with self._lock:
            held = self._held.get(entry_id)
        try:
            if fields is None:
                got = self.r.xrange(self.stream, entry_id, entry_id)
                fields = got[0][1] if got else None
            pipe = self.r.pipeline(transaction=True)
            if fields is not None:
                pipe.xadd(self.stream, fields)
                rec = self.keys.record(job_id)
                pipe.hset(rec, mapping={"status": "queued", "message": "handed back"})
                if held is not None and held.started:
                    pipe.hincrby(rec, "attempts", -1)
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            pipe.execute()
        except Exception as exc:  # it stays pending and is reclaimed later
            log.warning("%s: could not hand back job %s (%s)", self.kind, job_id, exc)
        finally:
            self._release(entry_id)

    # ---- heartbeat -------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        hb = max(0.05, self.cfg.heartbeat_s)
        while True:
            try:
                self.beat()
            except Exception as exc:
                log.debug("heartbeat failed: %s", exc)
            if self.stop_event.wait(hb):
                return

    def beat(self) -> None:
        """Refresh this worker's liveness and reset the idle time of every job it holds."""
        expires = time.time() + 3 * max(0.05, self.cfg.heartbeat_s)
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.workers(self.kind), {self.name: expires})
        pipe.zremrangebyscore(self.keys.workers(self.kind), "-inf", time.time() - 3600)
        with self._lock:
            held = [(eid, h.consumer) for eid, h in self._held.items()]
        for entry_id, consumer in held:
            pipe.xclaim(self.stream, GROUP, consumer, 0, [entry_id], justid=True)
        pipe.execute()
