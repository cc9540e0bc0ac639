"""Job queue throughput with a no-op handler (goal: >= 2000 jobs/s on this machine).

(Not named queue.py: a script folder named like a stdlib module shadows it.)

Run: .venv/bin/python bench/queue_throughput.py [--quick] [--jobs N]

Starts a throwaway redis-server the way ``digihuman serve`` embeds one (loopback, append-only
file, fsync every second), then for each configuration starts real ``digihuman worker debug``
processes, waits until they are ready, enqueues N no-op jobs in one pipeline and times until the
last one is acknowledged. Each job makes the full trip: stream read, the start script (attempt
count, status running), handler, one transaction (record done, result stream, XACK, XDEL).
Prints one table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digihuman.config import RedisSettings
from digihuman.jobs.queue import JobQueue, Keys, sync_client
from digihuman.jobs.supervisor import free_port, start_embedded_redis


def run_config(
    url: str, root: Path, procs: int, threads: int, prefetch: int, n_jobs: int
) -> tuple[float, float]:
    """(enqueue jobs/s, end-to-end jobs/s)."""
    env = dict(os.environ)
    env.update(
        DIGIHUMAN_REDIS_URL=url,
        DIGIHUMAN_DATA_DIR=str(root),
        DIGIHUMAN_JOBS__PREFETCH=str(prefetch),
        DIGIHUMAN_JOBS__BLOCK_MS="100",
        DIGIHUMAN_JOBS__HEARTBEAT_S="0.5",
        DIGIHUMAN_LOG_LEVEL="WARNING",
    )
    client = sync_client(RedisSettings(url=url), socket_timeout=30)
    client.flushdb()
    q = JobQueue(client, Keys())
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "digihuman", "worker", "debug", "-c", str(threads)], env=env
        )
        for _ in range(procs)
    ]
    try:
        deadline = time.monotonic() + 30
        while client.zcount("digihuman:workers:debug", time.time(), "+inf") < procs:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.05)
        t0 = time.perf_counter()
        ids: list[str] = []
        for start in range(0, n_jobs, 1000):
            ids += q.enqueue_many("debug", [{} for _ in range(min(1000, n_jobs - start))])
        t_enq = time.perf_counter() - t0
        stream = q.keys.stream("debug")
        while client.xlen(stream) > 0:
            time.sleep(0.005)
        t_all = time.perf_counter() - t0
        done = client.hget(q.keys.record(ids[-1]), "status")
        assert done == "done", done
        return n_jobs / t_enq, n_jobs / t_all
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer jobs and configurations")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    n = args.jobs or (4000 if args.quick else 20000)
    configs = [(1, 1, 1), (1, 1, 16), (2, 2, 16)]
    if not args.quick:
        configs = [(1, 1, 1), (1, 4, 1), (1, 1, 16), (2, 1, 16), (2, 2, 16), (4, 2, 16)]
    with tempfile.TemporaryDirectory() as tmp:
        rs = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
        redis_proc, url = start_embedded_redis(rs, Path(tmp) / "redis")
        try:
            la = os.getloadavg()[0]
            print(
                f"queue throughput, no-op handler, {n} jobs, {os.cpu_count()} cores, load {la:.1f}"
            )
            print("| worker processes | threads each | prefetch | enqueue jobs/s | jobs/s |")
            print("| ---: | ---: | ---: | ---: | ---: |")
            for procs, threads, prefetch in configs:
                enq, e2e = run_config(url, Path(tmp) / "root", procs, threads, prefetch, n)
                print(f"| {procs} | {threads} | {prefetch} | {enq:,.0f} | {e2e:,.0f} |")
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)


if __name__ == "__main__":
    main()
