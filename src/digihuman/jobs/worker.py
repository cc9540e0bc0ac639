"""The worker runner: consumer group reads, heartbeat, reclaim, retries, dead letters.

One :class:`Worker` serves one job kind with ``concurrency`` threads, each a consumer in the
kind's group. A heartbeat thread re-claims (``XCLAIM ... JUSTID``) every job this worker still
owns, which resets its idle time, and refreshes the worker's entry in ``P workers:<kind>`` (what
``/readyz`` looks at). A job idle longer than ``reclaim_after_s`` belongs to a worker that went
silent (killed, frozen, cut off): any worker takes it over with ``XAUTOCLAIM``, whose scan cursor
each thread keeps across rounds, so an orphan behind many live entries is found too.

Outcomes: the handler's result → ``done``; a :class:`~digihuman.errors.DigihumanError` (bad input,
missing weights, ...) → ``failed`` at once (retrying cannot help); any other exception → retried
until ``max_attempts``, then the job goes to the dead-letter stream with its error. Attempts are
counted when a job starts, so a job that kills its worker also ends in the dead-letter stream.

Every step that changes a job (start, finish, retry, hand back) is one Lua script that first
checks that the stream entry is still pending for this consumer and that the record is not final:
a worker that was silent past ``reclaim_after_s`` (a freeze, a partition) cannot overwrite the
outcome of the worker that took its job over; such a stale completion is refused and counted
(``digihuman_jobs_stale_total`` and the record's ``stale`` field). Each completion carries a
random token stored in the record with its outcome, so a script that Redis ran but whose reply
was lost, sent again, answers the first outcome and changes nothing (no second dead letter, no
second enqueue).

A job thread never dies silently: an exception outside the handler (a result that is not JSON, a
bug) is logged and dead-letters its job, and the thread goes on; a thread that ends anyway is
recorded, its job dead-lettered, and the worker reports itself not ready (it leaves
``P workers:<kind>`` for ``P unready:<kind>``), so ``/readyz`` stops counting it.

When Redis goes away the worker backs off (0.1 s doubling to 5 s) and resumes when it returns; a
finished job's completion is retried until Redis accepts it. SIGTERM: stop reading, finish the
running jobs for up to ``shutdown_grace_s`` while the heartbeat keeps them claimed, then hand back
what this worker still owns. At start, temp files that killed attempts left under the data root
(older than ``temp_sweep_after_s``) are removed.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from digihuman.config import JobSettings
from digihuman.errors import DigihumanError
from digihuman.jobs.queue import GROUP, Keys, decode, encode
from digihuman.observability import (
    JOB_INTERNAL_ERRORS,
    JOB_SECONDS,
    JOBS_FINISHED,
    JOBS_RECLAIMED,
    JOBS_STALE,
)
from digihuman.storage import DataRoot

log = logging.getLogger(__name__)

# Tiny jobs are read several per round trip: when a worker's jobs take under FAST_JOB_S on
# average, it reads up to FAST_PREFETCH at a time (held entries stay claimed by the heartbeat, so
# the cost is only that they wait behind each other — milliseconds for such jobs). Slow jobs keep
# the configured prefetch (1 by default) so that idle workers get them.
FAST_JOB_S = 0.005
FAST_PREFETCH = 16

# XAUTOCLAIM calls per reclaim round while its scan has not wrapped (each scans ~10 x COUNT).
RECLAIM_CALLS_PER_ROUND = 10

# Start a job: only while the entry is pending for this consumer and the record not final.
# KEYS: stream, record; ARGV: entry, consumer, worker name, now, ttl, kind.
# Returns {previous status, attempts}; attempts -1: already final, -2: not this consumer's.
_START = """
if #redis.call('XPENDING', KEYS[1], '@G', ARGV[1], ARGV[1], 1, ARGV[2]) == 0 then
  return {'', -2}
end
local st = redis.call('HGET', KEYS[2], 'status')
if st == 'done' or st == 'failed' or st == 'dead' then return {st, -1} end
local a = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('HSET', KEYS[2], 'status', 'running', 'worker', ARGV[3], 'entry', ARGV[1],
           'updated', ARGV[4], 'kind', ARGV[6], 'message', 'running')
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {st or '', a}
""".replace("@G", GROUP)

# Close a stream entry: mode done | failed | dead (final), retry, handback, ack.
# KEYS: stream, record, result stream, dead-letter stream.
# ARGV: entry, consumer, token, mode, now, ttl, dead-letter maxlen (0: none), job id, kind,
#       result JSON, error, error status, attempts (for the dead letter).
# Returns 'ok' or 'stale' (refused: the entry is no longer this consumer's, or the record is
# already final); a re-run with the same token returns the first run's answer and does nothing.
_COMPLETE = """
local entry, consumer, token, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mark = 'c:' .. token
local has_rec = redis.call('EXISTS', KEYS[2]) == 1
if has_rec then
  local prev = redis.call('HGET', KEYS[2], mark)
  if prev then return prev end
end
local completion = mode ~= 'handback' and mode ~= 'ack'
local function close(outcome)
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HSET', KEYS[2], mark, outcome)
    if outcome == 'stale' and completion then redis.call('HINCRBY', KEYS[2], 'stale', 1) end
  end
  return outcome
end
local function drop()
  redis.call('XACK', KEYS[1], '@G', entry)
  redis.call('XDEL', KEYS[1], entry)
end
if #redis.call('XPENDING', KEYS[1], '@G', entry, entry, 1, consumer) == 0 then
  return close('stale')
end
local st = redis.call('HGET', KEYS[2], 'status')
if st == 'done' or st == 'failed' or st == 'dead' then
  drop()
  if completion then return close('stale') end
  return close('ok')
end
if mode == 'ack' then
  drop()
  return close('ok')
end
local got = redis.call('XRANGE', KEYS[1], entry, entry)[1]
local now = ARGV[5]
if mode == 'retry' or mode == 'handback' then
  if got then redis.call('XADD', KEYS[1], '*', unpack(got[2])) end
  if mode == 'retry' then
    redis.call('HSET', KEYS[2], 'status', 'queued', 'message', 'retrying', 'error', ARGV[11],
               'updated', now)
  else
    redis.call('HSET', KEYS[2], 'status', 'queued', 'message', 'handed back', 'updated', now)
    if redis.call('HGET', KEYS[2], 'entry') == entry then
      redis.call('HINCRBY', KEYS[2], 'attempts', -1)
      redis.call('HSET', KEYS[2], 'entry', '')
    end
  end
  drop()
  return close('ok')
end
redis.call('HSET', KEYS[2], 'status', mode, 'updated', now, 'finished', now)
if mode == 'done' then
  redis.call('HSET', KEYS[2], 'progress', '1', 'message', 'done', 'result', ARGV[10])
else
  redis.call('HSET', KEYS[2], 'message', mode, 'error', ARGV[11])
  if ARGV[12] ~= '' then redis.call('HSET', KEYS[2], 'error_status', ARGV[12]) end
end
redis.call('EXPIRE', KEYS[2], ARGV[6])
if mode == 'dead' then
  local data = ''
  if got then
    for i = 1, #got[2], 2 do
      if got[2][i] == 'data' then data = got[2][i + 1] end
    end
  end
  local fields = {'id', ARGV[8], 'kind', ARGV[9], 'data', data, 'error', ARGV[11],
                  'attempts', ARGV[13], 't', now}
  if tonumber(ARGV[7]) > 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', unpack(fields))
  else
    redis.call('XADD', KEYS[4], '*', unpack(fields))
  end
end
redis.call('XADD', KEYS[3], 'MAXLEN', 4, '*', 'status', mode)
redis.call('EXPIRE', KEYS[3], ARGV[6])
drop()
return close('ok')
""".replace("@G", GROUP)

# Heartbeat: liveness (ready, broken or stopping) and the idle reset of the entries this worker
# still owns. KEYS: stream, workers, unready; ARGV: name, expires, cutoff, state ('ready' |
# 'broken' | 'stopping'), then entry, consumer pairs. Returns the entries another consumer took.
_BEAT = """
if ARGV[4] == 'ready' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
elseif ARGV[4] == 'broken' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
local lost = {}
for i = 5, #ARGV, 2 do
  if #redis.call('XPENDING', KEYS[1], '@G', ARGV[i], ARGV[i], 1, ARGV[i + 1]) == 1 then
    redis.call('XCLAIM', KEYS[1], '@G', ARGV[i + 1], 0, ARGV[i], 'JUSTID')
  elseif #redis.call('XPENDING', KEYS[1], '@G', ARGV[i], ARGV[i], 1) == 1 then
    table.insert(lost, ARGV[i])  -- another consumer has it (not: just finished here)
  end
end
return lost
""".replace("@G", GROUP)

FINAL_MODES = frozenset({"done", "failed", "dead"})


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
    """A stream entry this worker holds: its job and the consumer (thread) that owns it."""

    job_id: str
    consumer: str


# temp files of killed attempts: atomic_output / mkstemp / mkdtemp (".<stem>.<8 random>[.ext]"),
# the video writer's ".<stem>.part<pid>.mp4", downloads (".fetch-<job id>" and its temp file)
_TEMP_NAME = re.compile(r"^\.(?:\.?fetch-.+|.+\.part.*|.+\.[a-z0-9_]{8}(?:\.[A-Za-z0-9]{1,8})?)$")
_SWEPT_DIRS = ("tests", "results/output", "results/input")


def sweep_temp_files(root: DataRoot, older_than_s: float, *, now: float | None = None) -> int:
    """Remove temp files and folders that killed attempts left under the data root.

    Only names the writers use for temporaries (see ``_TEMP_NAME``), only in the folders jobs
    write to (``tests/`` with its subfolders, ``results/output``, ``results/input``; never models
    or avatars), and only when untouched for ``older_than_s`` (a running job keeps writing its
    temp file). Returns how many were removed.
    """
    now = time.time() if now is None else now
    removed = 0
    for rel in _SWEPT_DIRS:
        top = root.root / rel
        if not top.is_dir():
            continue
        folders = [top] + [
            d for d in top.iterdir() if rel == "tests" and d.is_dir() and d.name[0] != "."
        ]
        for folder in folders:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                if not _TEMP_NAME.match(e.name):
                    continue
                try:
                    if now - e.stat(follow_symlinks=False).st_mtime < older_than_s:
                        continue
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path)
                    else:
                        os.unlink(e.path)
                    removed += 1
                except OSError as exc:
                    log.debug("could not sweep %s: %s", e.path, exc)
    return removed


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
        self.stop_event = threading.Event()  # consumers: stop taking jobs
        self._beat_stop = threading.Event()  # heartbeat: stop (after the job threads ended)
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}  # stream entry id -> what the heartbeat keeps
        self._current: dict[str, tuple[str, str]] = {}  # consumer -> (entry, job) it runs
        self._dead: dict[str, str] = {}  # consumer -> why its thread ended
        self._start = client.register_script(_START)
        self._complete = client.register_script(_COMPLETE)
        self._beat = client.register_script(_BEAT)
        self._consumers: list[threading.Thread] = []
        self._heartbeat: threading.Thread | None = None
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
        if self.cfg.temp_sweep_after_s > 0:
            n = sweep_temp_files(self.data_root, self.cfg.temp_sweep_after_s)
            if n:
                log.info("%s: removed %d stale temp file(s) of killed attempts", self.kind, n)
            if self.kind == "render":  # killed avatar saves leave versions nobody points to
                from digihuman.avatar.store import AvatarStore

                n = AvatarStore(self.data_root.avatars).sweep()
                if n:
                    log.info("render: removed %d leftover(s) of killed avatar saves", n)
        for i in range(self.concurrency):
            t = threading.Thread(
                target=self._consume, args=(f"{self.name}:{i}",), name=f"job-{i}", daemon=True
            )
            t.start()
            self._consumers.append(t)
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="heartbeat", daemon=True
        )
        self._heartbeat.start()
        log.info("%s worker %s: %d thread(s)", self.kind, self.name, self.concurrency)

    def stop(self, grace_s: float | None = None) -> None:
        """Stop reading, let running jobs finish for ``grace_s``, hand back what is still ours.

        The heartbeat goes on until then, so a job finishing inside the grace period is never
        taken over by a peer; a job this worker no longer owns (taken over while it was silent)
        is left alone.
        """
        self.stop_event.set()
        deadline = time.monotonic() + (self.cfg.shutdown_grace_s if grace_s is None else grace_s)
        for t in self._consumers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = dict(self._held)
        handed = 0
        for entry_id, held in left.items():
            handed += self._hand_back(entry_id, held) == "ok"
        self._beat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.zrem(self.keys.workers(self.kind), self.name)
            pipe.zrem(self.keys.unready(self.kind), self.name)
            pipe.execute()
        except Exception as exc:  # the entries expire on their own
            log.debug("could not sign off: %s", exc)
        log.info("%s worker %s stopped (%d job(s) handed back)", self.kind, self.name, handed)

    def run_forever(self) -> None:
        self.start()
        while not self.stop_event.wait(0.5):
            pass

    @property
    def dead_consumers(self) -> dict[str, str]:
        """Job threads that ended while the worker runs: consumer name -> why."""
        with self._lock:
            dead = dict(self._dead)
        if not self.stop_event.is_set():
            for i, t in enumerate(self._consumers):
                name = f"{self.name}:{i}"
                if not t.is_alive() and name not in dead:
                    dead[name] = "the thread ended"
        return dead

    @property
    def ready(self) -> bool:
        return not self.stop_event.is_set() and not self.dead_consumers

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

    def _consume(self, consumer: str) -> None:
        """A job thread: the loop, and a record (and a dead letter) should it ever end early."""
        try:
            self._loop(consumer)
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            with self._lock:
                self._dead[consumer] = reason
                current = self._current.pop(consumer, None)
            JOB_INTERNAL_ERRORS.labels(self.kind).inc()
            log.critical(
                "%s: job thread %s died (%s); this worker now reports not ready",
                self.kind,
                consumer,
                reason,
                exc_info=True,
            )
            if current is not None:
                entry_id, job_id = current
                try:
                    self._close(
                        "dead", entry_id, consumer, job_id, error=f"its job thread died: {reason}"
                    )
                except BaseException as exc2:  # it stays pending and is reclaimed later
                    log.error("%s: could not dead-letter job %s: %s", self.kind, job_id, exc2)

    def _loop(self, consumer: str) -> None:
        import redis

        backoff = 0.1
        next_reclaim = 0.0
        cursor = "0-0"
        while not self.stop_event.is_set():
            entries: list[tuple[str, dict[str, str]]] = []
            try:
                self._ensure_group()
                now = time.monotonic()
                if now >= next_reclaim:
                    entries, cursor = self._reclaim(consumer, cursor)
                    # a scan that has not wrapped goes on at the next round, not 1/4 later
                    pause = 0.0 if cursor != "0-0" else max(0.05, self.cfg.reclaim_after_s / 4)
                    next_reclaim = now + pause
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
                                self._hand_back(eid, _Held(f.get("id", ""), consumer))
                            break
                        self._process_safe(entry_id, consumer, fields)
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
                # after an outage every pending job looks idle: give the owners' heartbeats
                # one reclaim period to re-claim theirs before taking anything over
                next_reclaim = time.monotonic() + self.cfg.reclaim_after_s
                self.stop_event.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._group_ready = False
                    continue
                log.exception("%s: redis refused a command", self.kind)
                self.stop_event.wait(1.0)
            except Exception:  # a bug outside any one job: record it, keep the thread
                JOB_INTERNAL_ERRORS.labels(self.kind).inc()
                log.exception("%s: job thread %s hit an error; going on", self.kind, consumer)
                self.stop_event.wait(1.0)

    def _reclaim(self, consumer: str, cursor: str) -> tuple[list[tuple[str, Any]], str]:
        """Take over jobs idle past ``reclaim_after_s``, continuing the previous scan."""
        reclaim_ms = int(self.cfg.reclaim_after_s * 1000)
        entries: list[tuple[str, Any]] = []
        for _ in range(RECLAIM_CALLS_PER_ROUND):
            res = self.r.xautoclaim(
                self.stream, GROUP, consumer, reclaim_ms, cursor, count=self.cfg.prefetch
            )
            cursor = str(res[0])
            entries = [e for e in res[1] if e and e[1]]
            if entries or cursor == "0-0":
                break
        if entries:
            JOBS_RECLAIMED.labels(self.kind).inc(len(entries))
            log.warning("%s: took over %d job(s) from a silent worker", self.kind, len(entries))
        return entries, cursor

    def _process_safe(self, entry_id: str, consumer: str, fields: dict[str, str]) -> None:
        """Run one entry; an error outside the handler dead-letters its job (Redis errors and
        shutdown pass through: the entry stays pending and is reclaimed)."""
        import redis

        job_id = fields.get("id", "")
        with self._lock:
            self._current[consumer] = (entry_id, job_id)
        try:
            self._process(entry_id, consumer, fields)
        except (redis.ConnectionError, redis.TimeoutError, _Stop):
            self._forget_current(consumer)
            raise
        except Exception as exc:
            self._forget_current(consumer)
            JOB_INTERNAL_ERRORS.labels(self.kind).inc()
            err = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0][:500]
            log.exception("%s job %s: %s; dead-lettering it", self.kind, job_id, err)
            self._close("dead", entry_id, consumer, job_id, error=err)
        else:
            self._forget_current(consumer)
        # anything else (SystemExit, KeyboardInterrupt from a handler) ends the thread with
        # _current still set: _consume records it and dead-letters that job

    def _forget_current(self, consumer: str) -> None:
        with self._lock:
            self._current.pop(consumer, None)

    def _process(self, entry_id: str, consumer: str, fields: dict[str, str]) -> None:
        job_id = fields.get("id", "")
        try:
            payload = decode(fields.get("data")) or {}
            if not isinstance(payload, dict):
                raise ValueError("payload is not a JSON object")
        except ValueError as exc:
            self._close("dead", entry_id, consumer, job_id, error=f"unreadable job: {exc}")
            return
        rec = self.keys.record(job_id)
        _prev, attempts = self._start(
            keys=[self.stream, rec],
            args=[
                entry_id,
                consumer,
                self.name,
                f"{time.time():.6f}",
                self.cfg.record_ttl_s,
                self.kind,
            ],
        )
        attempts = int(attempts)
        if attempts == -2:  # taken over while this worker was silent: not ours to run
            JOBS_STALE.labels(self.kind, "start").inc()
            log.warning("%s job %s: taken over by another worker; not started", self.kind, job_id)
            self._release(entry_id)
            return
        if attempts < 0:  # already ended (a duplicate delivery): just acknowledge it
            self._close("ack", entry_id, consumer, job_id)
            return
        if attempts > self.cfg.max_attempts:
            last = self.r.hget(rec, "error") or "its worker died while running it"
            err = f"gave up after {attempts - 1} attempt(s): {last}"
            self._close("dead", entry_id, consumer, job_id, error=err, attempts=attempts - 1)
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
            result_json = encode(result if result is not None else {})
        except DigihumanError as exc:
            self._observe(time.perf_counter() - t0)
            log.info("%s job %s failed: %s", self.kind, job_id, exc)
            self._close(
                "failed",
                entry_id,
                consumer,
                job_id,
                error=str(exc),
                error_status=exc.http_status,
            )
            return
        except Exception as exc:
            self._observe(time.perf_counter() - t0)
            err = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            if attempts >= self.cfg.max_attempts:
                log.error("%s job %s dead after %d attempts: %s", self.kind, job_id, attempts, err)
                self._close("dead", entry_id, consumer, job_id, error=err, attempts=attempts)
            else:
                log.warning("%s job %s attempt %d failed: %s", self.kind, job_id, attempts, err)
                self._close("retry", entry_id, consumer, job_id, error=err)
            return
        self._observe(time.perf_counter() - t0)
        self._close("done", entry_id, consumer, job_id, result_json=result_json)

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

    def _close(
        self,
        mode: str,
        entry_id: str,
        consumer: str,
        job_id: str,
        *,
        result_json: str = "{}",
        error: str = "",
        error_status: int | None = None,
        attempts: int | None = None,
    ) -> str:
        """Run the completion script until Redis answers; 'ok' or 'stale' (refused)."""
        token = uuid.uuid4().hex  # the same on a re-send: Redis answers the first outcome
        keys = [
            self.stream,
            self.keys.record(job_id),
            self.keys.result(job_id),
            self.keys.dead(self.kind),
        ]
        args = [
            entry_id,
            consumer,
            token,
            mode,
            f"{time.time():.6f}",
            self.cfg.record_ttl_s,
            max(0, self.cfg.dead_letter_maxlen),
            job_id,
            self.kind,
            result_json,
            error,
            "" if error_status is None else str(error_status),
            str(attempts or 0),
        ]
        outcome: list[str] = []

        def go() -> None:
            outcome[:] = [str(self._complete(keys=keys, args=args))]

        try:
            self._with_redis(f"{mode} of job {job_id}", go)
        finally:
            self._release(entry_id)
        if outcome and outcome[0] == "stale":
            if mode not in ("ack", "handback"):
                JOBS_STALE.labels(self.kind, mode).inc()
                log.warning(
                    "%s job %s: %s refused: the job was taken over or already finished "
                    "(this worker was silent past reclaim_after_s)",
                    self.kind,
                    job_id,
                    mode,
                )
            return "stale"
        if mode in FINAL_MODES:
            JOBS_FINISHED.labels(self.kind, mode).inc()
        elif mode == "retry":
            JOBS_FINISHED.labels(self.kind, "retried").inc()
        return "ok"

    def _hand_back(self, entry_id: str, held: _Held) -> str:
        """Put a job this worker still owns back on the stream (shutdown); its attempt, if it
        started, is given back. A job taken over meanwhile is left to its new owner."""
        try:
            return self._close("handback", entry_id, held.consumer, held.job_id)
        except Exception as exc:  # it stays pending and is reclaimed later
            log.warning("%s: could not hand back job %s (%s)", self.kind, held.job_id, exc)
            return "error"

    # ---- heartbeat -------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        hb = max(0.05, self.cfg.heartbeat_s)
        while True:
            try:
                self.beat()
            except Exception as exc:
                log.debug("heartbeat failed: %s", exc)
            if self._beat_stop.wait(hb):
                return

    def beat(self) -> None:
        """Refresh this worker's liveness and reset the idle time of every job it still owns."""
        now = time.time()
        expires = now + 3 * max(0.05, self.cfg.heartbeat_s)
        if self.stop_event.is_set():
            state = "stopping"
        else:
            state = "ready" if not self.dead_consumers else "broken"
        with self._lock:
            held = [(eid, h.consumer) for eid, h in self._held.items()]
        args: list[Any] = [self.name, expires, now - 3600, state]
        for entry_id, consumer in held:
            args += [entry_id, consumer]
        lost = self._beat(
            keys=[self.stream, self.keys.workers(self.kind), self.keys.unready(self.kind)],
            args=args,
        )
        for entry_id in lost or []:
            with self._lock:
                h = self._held.pop(entry_id, None)
            if h is not None:
                log.warning(
                    "%s job %s: taken over by another worker (this one was silent past "
                    "reclaim_after_s); its outcome here will be refused",
                    self.kind,
                    h.job_id,
                )
