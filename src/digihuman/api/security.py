"""API keys, body-size limit, request metrics (one pure-ASGI middleware) and the rate limits.

Several API keys may be configured, each with a name; the middleware records the name of the key
a request carried (``request.state.api_key``) for the per-key limit. Rate limits are in-process
token buckets on the work endpoints (those that enqueue TTS/ASR/render jobs): per API key when the
key has a ``per_minute``, and per client address only when ``rate_limit_per_minute`` is set
(off by default: a seed deployment has one backend calling from one address; the bounded queues
protect the service). They are per API process: with several API processes behind a load
balancer each enforces its own limit. They keep working while Redis is down.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from digihuman.observability import HTTP_LATENCY, HTTP_REQUESTS, RATE_LIMITED

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
JSON_BODY_LIMIT = 1024 * 1024  # bytes; every body but the upload routes' (``upload_limits``)


async def send_json(send: Any, status: int, body: dict[str, Any], headers: list[Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """API key on everything but health, a request-body bound, and request metrics."""

    def __init__(
        self,
        app: Any,
        *,
        api_keys: list[tuple[str, str]] | None = None,
        body_limit: int = JSON_BODY_LIMIT,
        upload_limits: list[tuple[str, int]] | None = None,
    ):
        self.app = app
        self.api_keys = [(name, key.encode()) for name, key in api_keys or []]  # (name, key)
        self.body_limit = body_limit
        # (path regex, limit): POSTs to these paths (streamed uploads) are bounded by their own
        # limit instead of body_limit; the route itself enforces the exact file-size cap
        self.upload_limits = [(re.compile(p), int(n)) for p, n in upload_limits or []]

    def _limit_for(self, scope: dict[str, Any]) -> int:
        if scope.get("method") == "POST":
            path = scope.get("path", "")
            for pat, n in self.upload_limits:
                if pat.fullmatch(path):
                    return n
        return self.body_limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status_box = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                status, msg, extra = refusal
                status_box[0] = status
                await send_json(send, status, {"message": msg}, extra)
                return
            await self.app(scope, self._bounded(receive, self._limit_for(scope)), send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope.get("method", ""), label, str(status_box[0])).inc()
            HTTP_LATENCY.labels(label).observe(time.perf_counter() - t0)

    def _key_name(self, given: str | None) -> str | None:
        """The name of the configured key ``given`` is, or None (every key compared in full)."""
        found = None
        raw = (given or "").encode()
        for name, key in self.api_keys:
            if hmac.compare_digest(raw, key) and given:
                found = name
        return found

    def _refuse(self, scope: dict[str, Any]) -> tuple[int, str, list[Any]] | None:
        path = scope.get("path", "")
        if self.api_keys and path not in OPEN_PATHS and scope.get("method") != "OPTIONS":
            given = None
            for k, v in scope.get("headers", []):
                if k == b"x-api-key":
                    given = v.decode("latin-1")
                    break
            if given is None and scope.get("query_string"):
                q = parse_qs(scope["query_string"].decode("latin-1"))
                given = (q.get("key") or [None])[0]
            name = self._key_name(given)
            if name is not None:
                scope.setdefault("state", {})["api_key"] = name  # request.state.api_key
            else:
                return (
                    401,
                    "missing or wrong API key: send the header X-API-Key or the query "
                    "parameter key",
                    [(b"www-authenticate", b"X-API-Key")],
                )
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    return 400, "bad Content-Length header", []
                limit = self._limit_for(scope)
                if n > limit:
                    return 413, f"request body is {n} bytes; the limit is {limit}", []
        return None

    def _bounded(self, receive: Any, limit: int) -> Any:
        seen = [0]

        async def wrapped() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    from fastapi import HTTPException

                    raise HTTPException(413, f"request body over the limit of {limit} bytes")
            return message

        return wrapped


class RateLimiter:
    """Token bucket per key: ``per_minute`` tokens a minute, at most ``burst`` saved up."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when allowed, else the seconds to wait for a token."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > 10_000:  # forget idle clients
                    self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < 600}
                return 0.0
            self._buckets[key] = (tokens, now)
            RATE_LIMITED.inc()
            return math.ceil((1.0 - tokens) / self.rate * 10) / 10
