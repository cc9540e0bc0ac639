"""The queue under faults: N jobs, real workers SIGTERMed, SIGKILLed and paused, Redis restarted.

Run: .venv/bin/python bench/fault_run.py [--quick] [--jobs N] [--workers W] [--seed S]

Starts a private redis-server (append-only file, fsync always) and W ``digihuman worker debug
-c 2`` processes with short settings (heartbeat 0.2 s, reclaim after 1.5 s, grace 5 s), enqueues
N ``debug`` jobs (mostly 0.05-0.5 s, one in ten 1.6-2.4 s, i.e. longer than the reclaim time;
some fail once and are retried, some are refused (``failed``), a few always fail (``dead``)),
and meanwhile: SIGTERMs and SIGKILLs random busy workers (each replaced by a new one), pauses one
busy worker with SIGSTOP for 2.5 x ``reclaim_after_s`` then SIGCONTs it, and kills -9 and
restarts Redis once. The handler counts for itself: every start and end of a run is a line in
``tests/debug/trace-<pid>.log``. Prints one table:

* jobs lost: a job whose record is missing or not final at the end (goal 0);
* final status wrong: not the status the payload asks for (goal 0);
* started twice after SIGTERM: a run in a SIGTERMed worker that did not fail, yet the job
  started again (goal 0; the grace period is longer than any job);
* completions recorded other than once: a job whose result stream holds != 1 entry, or with a
  dead letter when it is not dead / two dead letters (goal 0);
* stale completions refused: the records' ``stale`` counts, against the runs the traces show were
  superseded (a later attempt started before the run ended) and that still ended; and the
  ``digihuman_jobs_stale_total`` counters of the workers alive at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from digihuman.config import RedisSettings
from digihuman.jobs.queue import JobQueue, Keys, sync_client

RECLAIM_S = 1.5
MAX_ATTEMPTS = 4  # a job's attempts also count runs lost to SIGKILL
AOF = ("--appendonly", "yes", "--appendfsync", "always")
WORKER = (sys.executable, "-m", "digihuman", "worker", "debug", "-c", "2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *AOF]
        cmd += ["--dir", str(self.folder)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = sync_client(RedisSettings(url=self.url), socket_timeout=2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Run:
    env: dict[str, str]
    root: Path
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics: dict[int, int] = field(default_factory=dict)  # pid -> metrics port
    termed: dict[int, float] = field(default_factory=dict)  # pid -> time of SIGTERM
    killed: dict[int, float] = field(default_factory=dict)
    paused: dict[int, tuple[float, float]] = field(default_factory=dict)

    def spawn(self) -> int:
        port = free_port()
        log = open(self.root / f"worker-{len(self.metrics)}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(
            [*WORKER, "--metrics-port", str(port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers[p.pid] = p
        self.metrics[p.pid] = port
        return p.pid


def busy_pids(q: JobQueue, ids: list[str], run: Run) -> list[int]:
    pipe = q.r.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(q.keys.record(i), "status", "worker")
    pids = []
    for status, worker in pipe.execute():
        if status == "running" and worker:
            pid = int(worker.split(":")[-2])
            p = run.workers.get(pid)
            if p is not None and p.poll() is None and pid not in run.termed:
                pids.append(pid)
    return sorted(set(pids))


def expected_status(payload: dict[str, object]) -> str:
    if payload.get("fail"):
        return "dead"
    if payload.get("reject"):
        return "failed"
    return "done"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 jobs, 3 workers, fewer faults")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--timeout", type=float, default=240.0)
    a = ap.parse_args()
    n_jobs = a.jobs or (100 if a.quick else 500)
    n_workers = a.workers or (3 if a.quick else 4)
    rng = random.Random(a.seed)

    tmp = Path(tempfile.mkdtemp(prefix="fault-run-"))
    (tmp / "redis").mkdir()
    root = tmp / "root"
    redis = Redis(tmp / "redis")
    redis.start()
    env = dict(os.environ)
    env.update(
        DIGIHUMAN_REDIS_URL=redis.url,
        DIGIHUMAN_DATA_DIR=str(root),
        DIGIHUMAN_JOBS__HEARTBEAT_S="0.2",
        DIGIHUMAN_JOBS__RECLAIM_AFTER_S=str(RECLAIM_S),
        DIGIHUMAN_JOBS__BLOCK_MS="200",
        DIGIHUMAN_JOBS__SHUTDOWN_GRACE_S="5",
        DIGIHUMAN_JOBS__MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        DIGIHUMAN_LOG_LEVEL="ERROR",
    )
    root.mkdir()
    run = Run(env, tmp)
    for _ in range(n_workers):
        run.spawn()
    q = JobQueue(sync_client(RedisSettings(url=redis.url), socket_timeout=10), Keys())
    deadline = time.monotonic() + 60
    while q.r.zcount(q.keys.workers("debug"), time.time(), "+inf") < n_workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"workers did not start; see {tmp}/worker-*.log")
        time.sleep(0.1)

    payloads: list[dict[str, object]] = []
    for _ in range(n_jobs):
        long = rng.random() < 0.1
        p: dict[str, object] = {
            "sleep": round(rng.uniform(1.6, 2.4) if long else rng.uniform(0.05, 0.5), 3),
            "trace": True,
            "write": True,
        }
        u = rng.random()
        if u < 0.1:
            p["fail_on_attempt"] = 1
        elif u < 0.15:
            p["reject"] = True
        elif u < 0.17:
            p["fail"] = True
        payloads.append(p)
    t0 = time.monotonic()
    ids = q.enqueue_many("debug", payloads)
    want = dict(zip(ids, (expected_status(p) for p in payloads), strict=True))

    # the fault schedule: (seconds after the start, what)
    n_faults = 4 if a.quick else 10
    plan: list[tuple[float, str]] = []
    at = 1.5
    for i in range(n_faults):
        plan.append((at, "term" if i % 2 == 0 else "kill"))
        at += rng.uniform(1.0, 2.0)
    plan.insert(2, (plan[1][0] + 0.7, "pause"))
    plan.insert(5, (plan[4][0] + 0.7, "redis"))
    plan.sort()
    counts: Counter[str] = Counter()
    redis_down: tuple[float, float] | None = None

    def all_final() -> bool:
        pipe = q.r.pipeline(transaction=False)
        for i in ids:
            pipe.hget(q.keys.record(i), "status")
        return all(s in ("done", "failed", "dead") for s in pipe.execute())

    while time.monotonic() - t0 < a.timeout:
        now = time.monotonic() - t0
        for pid, (t_stop, t_cont) in list(run.paused.items()):
            if t_cont == 0.0 and now >= t_stop + 2.5 * RECLAIM_S:
                os.kill(pid, signal.SIGCONT)
                run.paused[pid] = (t_stop, now)
        if plan and now >= plan[0][0]:
            _, what = plan.pop(0)
            if what == "redis":
                redis.kill()
                t_down = time.monotonic() - t0
                time.sleep(1.0)
                redis.start()
                redis_down = (t_down, time.monotonic() - t0)
                counts["redis"] += 1
                continue
            try:
                pids = busy_pids(q, ids, run)
            except Exception:
                pids = []
            pids = [p for p in pids if p not in run.paused]
            if not pids:
                plan.insert(0, (now + 0.3, what))  # nobody busy right now: a bit later
                continue
            pid = rng.choice(pids)
            if what == "term":
                os.kill(pid, signal.SIGTERM)
                run.termed[pid] = time.time()
                run.spawn()
            elif what == "kill":
                os.kill(pid, signal.SIGKILL)
                run.killed[pid] = time.time()
                run.spawn()
            else:
                os.kill(pid, signal.SIGSTOP)
                run.paused[pid] = (now, 0.0)
            counts[what] += 1
        if not plan and all(t != 0.0 for _, t in run.paused.values()):
            try:
                if all_final():
                    break
            except Exception:
                pass
        time.sleep(0.05)
    wall = time.monotonic() - t0
    time.sleep(1.0)  # late (stale) completions of the paused worker land

    # ---- read what happened ------------------------------------------------------------------
    stale_prom = 0.0
    for pid, port in run.metrics.items():
        if run.workers[pid].poll() is not None:
            continue
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            continue
        for line in text.decode().splitlines():
            if line.startswith("digihuman_jobs_stale_total{"):
                stale_prom += float(line.rsplit(" ", 1)[1])
    for p in run.workers.values():
        if p.poll() is None:
            p.terminate()
    for p in run.workers.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()

    pipe = q.r.pipeline(transaction=False)
    for i in ids:
        pipe.hgetall(q.keys.record(i))
        pipe.xlen(q.keys.result(i))
    got = pipe.execute()
    recs = got[0::2]
    results = got[1::2]
    dead_ids = Counter(d["id"] for d in q.dead_letters("debug"))

    runs: dict[tuple[str, int, int], dict[str, float | str]] = defaultdict(dict)
    for f in (root / "tests" / "debug").glob("trace-*.log"):
        for line in f.read_text().splitlines():
            ev, job, attempt, pid, t = line.split()
            r = runs[(job, int(attempt), int(pid))]
            if ev == "start":
                r["start"] = float(t)
            else:
                r["end"] = float(t)
                r["outcome"] = ev
    starts_by_job: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
    for (job, attempt, pid), r in runs.items():
        if "start" in r:
            starts_by_job[job].append((float(r["start"]), attempt, pid))

    lost = sum(1 for r in recs if r.get("status") not in ("done", "failed", "dead"))
    wrong = sum(
        1
        for i, r in zip(ids, recs, strict=True)
        if r.get("status") in ("done", "failed", "dead") and r.get("status") != want[i]
    )
    twice_after_term = 0
    superseded_ended = 0
    for (job, _attempt, pid), r in runs.items():
        later = [s for s in starts_by_job[job] if s[0] > float(r.get("start", 0.0))]
        if pid in run.termed and r.get("outcome") != "end-error" and later:
            twice_after_term += 1
        if "end" in r and any(s[0] < float(r["end"]) and s[2] != pid for s in later):
            superseded_ended += 1
    not_once = sum(1 for n in results if n != 1)
    bad_dead = sum(
        1
        for i, r in zip(ids, recs, strict=True)
        if dead_ids[i] != (1 if r.get("status") == "dead" else 0)
    )
    stale_rec = sum(int(r.get("stale") or 0) for r in recs)
    n_starts = sum(len(v) for v in starts_by_job.values())
    rerun = sum(1 for v in starts_by_job.values() if len(v) > 1)
    statuses = Counter(r.get("status", "missing") for r in recs)

    rows = [
        ("jobs / worker processes (2 threads each)", f"{n_jobs} / {len(run.workers)}", ""),
        (
            "faults: SIGTERM / SIGKILL / SIGSTOP / Redis kill -9",
            f"{counts['term']} / {counts['kill']} / {counts['pause']} / {counts['redis']}",
            "",
        ),
        ("wall time", f"{wall:.1f} s", "a few minutes"),
        ("final statuses", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())), ""),
        ("jobs lost", str(lost), "0"),
        ("final status wrong", str(wrong), "0"),
        ("started twice after SIGTERM", str(twice_after_term), "0"),
        ("jobs with completions recorded != 1", str(not_once), "0"),
        ("dead letters missing or doubled", str(bad_dead), "0"),
        ("handler runs / jobs run more than once", f"{n_starts} / {rerun}", "at least once"),
        ("superseded runs that still ended (traces)", str(superseded_ended), ""),
        ("stale completions refused (records)", str(stale_rec), "= the line above"),
        ("  of which counted by live workers' Prometheus", f"{stale_prom:.0f}", ""),
    ]
    if redis_down:
        rows.append(("Redis down", f"{redis_down[1] - redis_down[0]:.1f} s", ""))
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"{'measure':<{w}}  {'value':<{v}}  goal")
    print(f"{'-' * w}  {'-' * v}  ----")
    for name, value, goal in rows:
        print(f"{name:<{w}}  {value:<{v}}  {goal}")
    redis.kill()
    ok = lost == wrong == twice_after_term == not_once == bad_dead == 0
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"(kept {tmp} for a look: worker logs, traces, redis AOF)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
