"""Logging set-up and every Prometheus metric, declared once.

The API exposes these at ``/metrics``; a worker exposes its own with ``--metrics-port``.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from prometheus_client import Counter, Gauge, Histogram

# --- API -----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "digihuman_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "digihuman_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RATE_LIMITED = Counter("digihuman_rate_limited_total", "Requests refused by the rate limit")

# --- queue ---------------------------------------------------------------------------------
JOBS_ENQUEUED = Counter("digihuman_jobs_enqueued_total", "Jobs put on the queue", ["kind"])
JOBS_FINISHED = Counter(
    "digihuman_jobs_finished_total", "Jobs finished by this process", ["kind", "outcome"]
)
JOBS_RECLAIMED = Counter(
    "digihuman_jobs_reclaimed_total", "Jobs taken over from a silent worker", ["kind"]
)
JOBS_STALE = Counter(
    "digihuman_jobs_stale_total",
    "Starts and completions refused: the job was taken over or already finished elsewhere",
    ["kind", "action"],
)
JOB_INTERNAL_ERRORS = Counter(
    "digihuman_job_internal_errors_total",
    "Errors outside a handler caught in a job thread (the job was dead-lettered)",
    ["kind"],
)
JOB_SECONDS = Histogram(
    "digihuman_job_seconds",
    "Time a handler spent on a job",
    ["kind"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
QUEUE_DEPTH = Gauge("digihuman_queue_depth", "Jobs waiting in a stream (API view)", ["kind"])
QUEUE_PENDING = Gauge(
    "digihuman_queue_pending", "Jobs delivered to a worker and not yet acknowledged", ["kind"]
)
DEAD_LETTERS = Gauge("digihuman_dead_letters", "Entries in a dead-letter stream", ["kind"])
WORKERS_ALIVE = Gauge("digihuman_workers_alive", "Workers with a fresh heartbeat", ["kind"])


class JsonFormatter(logging.Formatter):
    """One JSON object per line (for log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Configure the root logger once for a process (CLI entrypoints call this)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
