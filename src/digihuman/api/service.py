"""What the routes share: settings, the data root, the queue (async Redis) and the rate limit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from digihuman.config import Settings
from digihuman.jobs.queue import (
    GROUP,
    JobRecord,
    Keys,
    async_client,
    new_job_id,
    parse_record,
    queue_enqueue,
)
from digihuman.observability import (
    DEAD_LETTERS,
    JOBS_ENQUEUED,
    QUEUE_DEPTH,
    QUEUE_PENDING,
    WORKERS_ALIVE,
)
from digihuman.storage import DataRoot


@dataclass
class Service:
    settings: Settings
    data_root: DataRoot
    keys: Keys
    r: Any  # redis.asyncio.Redis, short timeouts
    rw: Any  # redis.asyncio.Redis for blocking waits

    @classmethod
    def create(cls, settings: Settings) -> Service:
        wait_timeout = max(settings.api.request_timeout_s, settings.api.max_wait_s) + 5.0
        return cls(
            settings=settings,
            data_root=DataRoot(settings.data_dir).ensure(),
            keys=Keys(settings.redis.key_prefix),
            r=async_client(settings.redis),
            rw=async_client(settings.redis, socket_timeout=wait_timeout),
        )

    async def close(self) -> None:
        await self.r.aclose()
        await self.rw.aclose()

    async def enqueue(self, kind: str, payload: dict[str, Any], job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        pipe = self.r.pipeline(transaction=True)
        queue_enqueue(pipe, self.keys, kind, payload, job_id, self.settings.jobs.record_ttl_s)
        await pipe.execute()
        JOBS_ENQUEUED.labels(kind).inc()
        return job_id

    async def get(self, job_id: str) -> JobRecord | None:
        return parse_record(await self.r.hgetall(self.keys.record(job_id)), job_id)

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """The job's record once it ended, or as it is after ``timeout_s`` (blocking XREAD)."""
        rec = await self.get(job_id)
        if rec is None or rec.done or timeout_s <= 0:
            return rec
        await self.rw.xread(
            {self.keys.result(job_id): "0"}, count=1, block=max(1, int(timeout_s * 1000))
        )
        return await self.get(job_id)

    async def live_workers(self) -> dict[str, int]:
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        kinds = list(self.settings.jobs.kinds)
        for kind in kinds:
            pipe.zcount(self.keys.workers(kind), now, "+inf")
        counts = await pipe.execute()
        return {k: int(c) for k, c in zip(kinds, counts, strict=True)}

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
