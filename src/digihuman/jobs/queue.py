"""The job queue on Redis Streams: keys, wire format, enqueue, job records, completion waits.

Layout (``P`` is ``RedisSettings.key_prefix``)::

    P jobs:<kind>      stream of the jobs of one kind not yet finished; consumer group "workers"
    P dead:<kind>      dead-letter stream (job id, kind, payload, error, attempts), ~MAXLEN
    P job:<id>         hash: the job record (status, progress, message, result, error, attempts)
    P result:<id>      tiny stream with one entry when the job ends (waiters XREAD it, blocking)
    P workers:<kind>   sorted set: ready worker name -> heartbeat expiry (unix seconds)
    P unready:<kind>   sorted set: workers alive but not ready (a job thread died) -> expiry

Everything on the wire is JSON text, never pickle. Delivery is at-least-once: a job whose worker
goes silent is taken over by another worker, so handlers are idempotent (output named by job id,
written by atomic rename). Job records and result streams expire after ``record_ttl_s``.

Bounded queues: an enqueue with ``max_queued`` (see :func:`max_queued_for`) is refused with
:class:`~digihuman.errors.QueueFull` when the kind's stream already holds that many jobs (the
check and the add are one script).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from digihuman.config import JobSettings, RedisSettings
from digihuman.errors import QueueFull

GROUP = "workers"
TERMINAL = frozenset({"done", "failed", "dead"})
STATUSES = ("queued", "running", "done", "failed", "dead")


@dataclass(frozen=True)
class Keys:
    """Redis key names under one prefix."""

    prefix: str = "digihuman:"

    def stream(self, kind: str) -> str:
        return f"{self.prefix}jobs:{kind}"

    def dead(self, kind: str) -> str:
        return f"{self.prefix}dead:{kind}"

    def record(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}result:{job_id}"

    def workers(self, kind: str) -> str:
        return f"{self.prefix}workers:{kind}"

    def unready(self, kind: str) -> str:
        return f"{self.prefix}unready:{kind}"


@dataclass(frozen=True)
class JobRecord:
    """A job's record as the API shows it."""

    id: str
    kind: str
    status: str
    progress: float
    message: str
    attempts: int
    result: dict[str, Any] | None
    error: str | None
    error_status: int | None
    created: float
    updated: float

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": self.progress,
            "message": self.message,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "created": self.created,
            "updated": self.updated,
        }


def new_job_id() -> str:
    """A job id; also names the job's output (``tests/<id>.wav`` for TTS)."""
    return str(uuid.uuid4())


def encode(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def decode(text: str | bytes | None) -> Any:
    if text is None or text == "":
        return None
    return json.loads(text)


def parse_record(fields: dict[str, str], job_id: str) -> JobRecord | None:
    if not fields:
        return None
    es = fields.get("error_status")
    return JobRecord(
        id=job_id,
        kind=fields.get("kind", ""),
        status=fields.get("status", "queued"),
        progress=float(fields.get("progress") or 0.0),
        message=fields.get("message", ""),
        attempts=int(fields.get("attempts") or 0),
        result=decode(fields.get("result")),
        error=fields.get("error") or None,
        error_status=int(es) if es else None,
        created=float(fields.get("created") or 0.0),
        updated=float(fields.get("updated") or 0.0),
    )


# Create a job unless its kind's queue is full; one script, so the check and the add are atomic.
# The stream holds exactly the jobs not yet finished (a finished entry is acknowledged and deleted
# in the same step; a retry or hand-back adds the new entry and deletes the old one together), so
# XLEN is the open-job count and stays right under retries, reclaim and Redis restarts.
# A job id that already has a record is not added again (a producer re-sending after a timeout).
# KEYS: stream, record; ARGV: job id, payload, now, ttl, max queued (0: unbounded), kind.
# Returns {1, depth before} when added, {2, depth} when the id existed, {0, depth} when full.
ENQUEUE_LUA = """
local n = redis.call('XLEN', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then return {2, n} end
local limit = tonumber(ARGV[5])
if limit > 0 and n >= limit then return {0, n} end
redis.call('HSET', KEYS[2], 'kind', ARGV[6], 'status', 'queued', 'progress', '0',
           'message', 'queued', 'attempts', '0', 'payload', ARGV[2],
           'created', ARGV[3], 'updated', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'data', ARGV[2], 't', ARGV[3])
return {1, n}
"""


def max_queued_for(cfg: JobSettings, kind: str) -> int:
    """The configured bound on open (not yet finished) jobs of ``kind``; 0: unbounded."""
    return int(cfg.max_queued.get(kind, cfg.max_queued_default))


def queue_enqueue(
    pipe: Any,
    keys: Keys,
    kind: str,
    payload: dict[str, Any],
    job_id: str,
    ttl_s: int,
    *,
    max_queued: int = 0,
) -> None:
    """Buffer the script that creates a job on a (sync or async) pipeline.

    Its reply (one item of ``pipe.execute()``) goes to :func:`check_enqueued`, which raises
    :class:`~digihuman.errors.QueueFull` when the kind already holds ``max_queued`` open jobs.
    """
    now = f"{time.time():.6f}"
    pipe.eval(
        ENQUEUE_LUA,
        2,
        keys.stream(kind),
        keys.record(job_id),
        job_id,
        encode(payload),
        now,
        int(ttl_s),
        max(0, int(max_queued)),
        kind,
    )


def check_enqueued(reply: Any, *, kind: str, max_queued: int, retry_after_s: float) -> bool:
    """Raise ``QueueFull`` for a refused enqueue; True when added, False when the id existed."""
    code, depth = int(reply[0]), int(reply[1])
    if code == 0:
        raise QueueFull(
            f"the {kind} queue is full ({depth} jobs not yet finished, limit {max_queued}); "
            f"retry in {retry_after_s:g} s",
            kind=kind,
            limit=max_queued,
            retry_after_s=retry_after_s,
        )
    return code == 1


def redis_kwargs(settings: RedisSettings, *, socket_timeout: float | None = None) -> dict[str, Any]:
    """Connection options: short timeouts and no client-side retries (callers decide)."""
    kw: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": settings.socket_timeout_s if socket_timeout is None else socket_timeout,
        "socket_connect_timeout": settings.connect_timeout_s,
        "health_check_interval": 0,
    }
    if settings.password is not None:
        kw["password"] = settings.password.get_secret_value()
    return kw


def sync_client(settings: RedisSettings, *, socket_timeout: float | None = None) -> Any:
    """A ``redis.Redis`` for workers and tools (no retries: the worker loop backs off)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        settings.url,
        retry=Retry(NoBackoff(), 0),
        **redis_kwargs(settings, socket_timeout=socket_timeout),
    )


def async_client(settings: RedisSettings, *, socket_timeout: float | None = None) -> Any:
    """A ``redis.asyncio.Redis`` for the API (no retries: a dead Redis gives a 503 at once)."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aredis.Redis.from_url(
        settings.url,
        retry=Retry(NoBackoff(), 0),
        **redis_kwargs(settings, socket_timeout=socket_timeout),
    )


class JobQueue:
    """Synchronous producer/inspector (CLI, tests, benches). Workers live in ``worker.py``."""

    def __init__(self, client: Any, keys: Keys, *, ttl_s: int = 7 * 24 * 3600) -> None:
        self.r = client
        self.keys = keys
        self.ttl_s = ttl_s

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        job_id: str | None = None,
        *,
        max_queued: int = 0,
        retry_after_s: float = 5.0,
    ) -> str:
        """Add one job; raises ``QueueFull`` when ``kind`` holds ``max_queued`` open jobs."""
        job_id = job_id or new_job_id()
        pipe = self.r.pipeline(transaction=False)
        queue_enqueue(pipe, self.keys, kind, payload, job_id, self.ttl_s, max_queued=max_queued)
        (reply,) = pipe.execute()
        check_enqueued(reply, kind=kind, max_queued=max_queued, retry_after_s=retry_after_s)
        return job_id

    def enqueue_many(self, kind: str, payloads: list[dict[str, Any]]) -> list[str]:
        """Add jobs in one round trip, unbounded (benches, tools)."""
        ids = [new_job_id() for _ in payloads]
        pipe = self.r.pipeline(transaction=False)
        for job_id, payload in zip(ids, payloads, strict=True):
            queue_enqueue(pipe, self.keys, kind, payload, job_id, self.ttl_s)
        pipe.execute()
        return ids

    def get(self, job_id: str) -> JobRecord | None:
        return parse_record(self.r.hgetall(self.keys.record(job_id)), job_id)

    def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Block (XREAD on the job's result stream, no polling) until the job ends or timeout."""
        rec = self.get(job_id)
        if rec is None or rec.done:
            return rec
        self.r.xread({self.keys.result(job_id): "0"}, count=1, block=max(1, int(timeout_s * 1000)))
        return self.get(job_id)

    def dead_letters(self, kind: str) -> list[dict[str, Any]]:
        return [
            {"entry": eid, **fields}
            for eid, fields in self.r.xrange(self.keys.dead(kind), "-", "+")
        ]

    def depth(self, kind: str) -> tuple[int, int]:
        """(entries in the stream, of which delivered but not acknowledged)."""
        length = int(self.r.xlen(self.keys.stream(kind)))
        try:
            pending = int(self.r.xpending(self.keys.stream(kind), GROUP)["pending"])
        except Exception:  # no group yet
            pending = 0
        return length, pending
