"""What the routes share: settings, the data root, the queue (async Redis) and the waits.

Redis connections are bounded: short commands share a pool of ``api.redis_max_connections``
(a request waits up to the socket timeout for a free one, then gets a 503), and blocking waits
(``XREAD BLOCK`` on a job's result stream) take a slot out of ``api.max_waits``, each slot one
connection of a second pool of that size. Past the cap a wait is refused at once with 503 +
``Retry-After`` before anything is enqueued, so one API process never holds more than
``redis_max_connections + max_waits`` connections and a flood of waiters cannot starve Redis of
connections for the workers. A wait ends early when its client disconnects, which closes its
connection (Redis stops blocking for it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from digihuman.config import RedisSettings, Settings
from digihuman.errors import DigihumanError
from digihuman.jobs.queue import (
    GROUP,
    JobRecord,
    Keys,
    check_enqueued,
    max_queued_for,
    new_job_id,
    parse_record,
    queue_enqueue,
    redis_kwargs,
)
from digihuman.observability import (
    DEAD_LETTERS,
    JOBS_ENQUEUED,
    QUEUE_DEPTH,
    QUEUE_PENDING,
    WORKERS_ALIVE,
)
from digihuman.storage import DataRoot

WAITS_RETRY_AFTER_S = 2.0


class WaitsBusy(DigihumanError):
    """Every wait slot of this API process is taken; the client should retry shortly."""

    http_status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClientGone(DigihumanError):
    """The client disconnected while its request waited (nobody reads the answer)."""

    http_status = 499  # nginx's "client closed request"; shows up in the request metrics


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]  # an ASGI receive


def bounded_client(
    settings: RedisSettings, size: int, *, socket_timeout: float | None = None
) -> Any:
    """A ``redis.asyncio.Redis`` on a pool of at most ``size`` connections; a caller waits up to
    the socket timeout for a free one, then gets ``ConnectionError("No connection available.")``.
    No client-side retries: a dead Redis gives a 503 at once."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kw = redis_kwargs(settings, socket_timeout=socket_timeout)
    pool = aredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=max(1, size),
        timeout=settings.socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        **kw,
    )
    return aredis.Redis.from_pool(pool)


async def _client_gone(receive: Receive) -> None:
    """Returns when the ASGI server reports the client's disconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


@dataclass
class Service:
    settings: Settings
    data_root: DataRoot
    keys: Keys
    r: Any  # redis.asyncio.Redis, short timeouts, bounded pool
    rw: Any  # redis.asyncio.Redis for blocking waits, one connection per wait slot
    waiting: int = field(default=0)

    @classmethod
    def create(cls, settings: Settings) -> Service:
        api = settings.api
        wait_timeout = max(api.request_timeout_s, api.max_wait_s) + 5.0
        return cls(
            settings=settings,
            data_root=DataRoot(settings.data_dir).ensure(),
            keys=Keys(settings.redis.key_prefix),
            r=bounded_client(settings.redis, api.redis_max_connections),
            # one connection per wait slot, and a spare for internal waits (the rooms' clip
            # conductor blocks on its jobs' result streams outside the slots)
            rw=bounded_client(settings.redis, api.max_waits + 2, socket_timeout=wait_timeout),
        )

    async def close(self) -> None:
        await self.r.aclose()
        await self.rw.aclose()

    async def enqueue(self, kind: str, payload: dict[str, Any], job_id: str | None = None) -> str:
        """Add a job; ``QueueFull`` (503 + Retry-After) when the kind holds its bound of open
        jobs (``jobs.max_queued``); the check and the add are one script in Redis."""
        jobs = self.settings.jobs
        job_id = job_id or new_job_id()
        limit = max_queued_for(jobs, kind)
        pipe = self.r.pipeline(transaction=False)
        queue_enqueue(pipe, self.keys, kind, payload, job_id, jobs.record_ttl_s, max_queued=limit)
        (reply,) = await pipe.execute()
        check_enqueued(
            reply, kind=kind, max_queued=limit, retry_after_s=jobs.queue_full_retry_after_s
        )
        JOBS_ENQUEUED.labels(kind).inc()
        return job_id

    @asynccontextmanager
    async def wait_slot(self) -> AsyncIterator[None]:
        """Hold one of the ``api.max_waits`` wait slots, or raise ``WaitsBusy`` at once.

        Take it before enqueueing, so that a refused request leaves nothing behind."""
        cap = self.settings.api.max_waits
        if self.waiting >= cap:
            raise WaitsBusy(
                f"this server already holds {cap} waiting requests (api.max_waits); retry in "
                f"{WAITS_RETRY_AFTER_S:g} s, or enqueue without waiting and follow "
                "/v1/jobs/{id}",
                retry_after_s=WAITS_RETRY_AFTER_S,
            )
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    async def get(self, job_id: str) -> JobRecord | None:
        return parse_record(await self.r.hgetall(self.keys.record(job_id)), job_id)

    async def wait(
        self, job_id: str, timeout_s: float, receive: Receive | None = None
    ) -> JobRecord | None:
        """The job's record once it ended, or as it is after ``timeout_s`` (blocking XREAD).

        Call inside :meth:`wait_slot`. With ``receive`` (the request's ASGI receive) the wait
        stops when the client disconnects: ``ClientGone``, and the blocked connection is closed.
        """
        rec = await self.get(job_id)
        if rec is None or rec.done or timeout_s <= 0:
            return rec
        read = asyncio.ensure_future(
            self.rw.xread(
                {self.keys.result(job_id): "0"}, count=1, block=max(1, int(timeout_s * 1000))
            )
        )
        tasks: set[asyncio.Future[Any]] = {read}
        gone = asyncio.ensure_future(_client_gone(receive)) if receive is not None else None
        if gone is not None:
            tasks.add(gone)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()  # a cancelled XREAD closes its connection: Redis stops blocking
            await asyncio.gather(*tasks, return_exceptions=True)
        if read.cancelled():
            raise ClientGone(f"the client went away while waiting for job {job_id}")
        read.result()  # a Redis error while waiting: 503
        return await self.get(job_id)

    async def live_workers(self) -> dict[str, int]:
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        kinds = list(self.settings.jobs.kinds)
        for kind in kinds:
            pipe.zcount(self.keys.workers(kind), now, "+inf")
        counts = await pipe.execute()
        return {k: int(c) for k, c in zip(kinds, counts, strict=True)}

    async def unready_workers(self) -> dict[str, list[str]]:
        """Workers alive but not ready (a job thread died), by kind; kinds without any left out."""
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        kinds = list(self.settings.jobs.kinds)
        for kind in kinds:
            pipe.zrangebyscore(self.keys.unready(kind), now, "+inf")
        names = await pipe.execute()
        return {k: list(n) for k, n in zip(kinds, names, strict=True) if n}

    async def refresh_gauges(self) -> None:
        kinds = list(self.settings.jobs.kinds)
        pipe = self.r.pipeline(transaction=False)
        for kind in kinds:
            pipe.xlen(self.keys.stream(kind))
            pipe.xlen(self.keys.dead(kind))
        lens = await pipe.execute()
        alive = await self.live_workers()
        for i, kind in enumerate(kinds):
            QUEUE_DEPTH.labels(kind).set(lens[2 * i])
            DEAD_LETTERS.labels(kind).set(lens[2 * i + 1])
            WORKERS_ALIVE.labels(kind).set(alive.get(kind, 0))
            try:
                info = await self.r.xpending(self.keys.stream(kind), GROUP)
                QUEUE_PENDING.labels(kind).set(int(info["pending"]))
            except Exception:  # no group yet: no worker ever ran
                QUEUE_PENDING.labels(kind).set(0)
