"""The HTTP API: ``create_app(settings)``.

The seed's seven GET endpoints keep their paths, parameter names and JSON shapes; a typed
``/v1`` API sits beside them. Every error is JSON ``{"message": ...}`` with a fitting status;
a stack trace never reaches a client. Redis unreachable → 503 at once.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from digihuman.config import ApiSettings, Settings
from digihuman.errors import DigihumanError

log = logging.getLogger(__name__)

DESCRIPTION = """
A self-hosted digital human service.

* **Seed endpoints** (`/tts`, `/asr`, `/bqfk`, `/create/zbj`, `/create/zbjv2`, `/human`,
  `/humanv2`): GET, the seed system's parameters and JSON shapes, unchanged.
* **/v1**: typed POST equivalents, job records, file download (with HTTP range requests).
* Auth: when API keys are configured (`DIGIHUMAN_API_KEY`, or several in
  `DIGIHUMAN_API__API_KEYS`), send one as the `X-API-Key` header or the `key` query parameter
  (every endpoint but `/healthz` and `/readyz`).
* Overload: a full job queue, or too many waiting requests, answers 503 with `Retry-After`
  (nothing is enqueued); a key's own rate limit answers 429 with `Retry-After`.
* Errors: JSON `{"message": "..."}` with the status code.
"""


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (read from the environment when not given)."""
    import redis.exceptions as rexc

    from digihuman.api.avatars import avatars_router
    from digihuman.api.feedback import feedback_router
    from digihuman.api.live import live_router
    from digihuman.api.rooms import open_rooms, rooms_router
    from digihuman.api.routes import seed_router, v1_router
    from digihuman.api.security import GuardMiddleware, RateLimiter
    from digihuman.api.service import Service
    from digihuman.api.system import system_router

    if settings is None:
        from digihuman.config import load_settings

        settings = load_settings()
    api = settings.api

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Redis clients belong to the serving event loop, so they are made here. The API loads
        # no models: engines load once in the workers that run them.
        app.state.service = Service.create(settings)
        rooms = await open_rooms(app, settings, app.state.service)  # database + clip conductor
        try:
            yield
        finally:
            await rooms.close()
            await app.state.service.close()

    app = FastAPI(
        title="digihuman",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    keys = api_keys(api)
    app.state.limiter = RateLimiter(api.rate_limit_per_minute, api.rate_limit_burst)
    app.state.key_limiters = {
        k.name: RateLimiter(k.per_minute, k.burst or k.per_minute)
        for k in api.api_keys
        if k.per_minute > 0
    }

    @app.exception_handler(DigihumanError)
    async def _digihuman(request: Request, exc: DigihumanError) -> JSONResponse:
        retry = getattr(exc, "retry_after_s", None)  # QueueFull, WaitsBusy
        headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry else None
        return JSONResponse({"message": str(exc)}, status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"message": _validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no such endpoint: {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        return JSONResponse(
            {"message": msg}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        if str(exc) == "No connection available.":  # the bounded pool stayed busy
            msg = (
                "the API's Redis connections are all busy; try again shortly (operators: "
                "api.redis_max_connections)"
            )
            return JSONResponse({"message": msg}, status_code=503, headers={"Retry-After": "1"})
        log.warning("redis unavailable: %s", exc)
        return JSONResponse(
            {
                "message": "the job queue (Redis) is unreachable; try again shortly "
                "(operators: check DIGIHUMAN_REDIS_URL and that Redis is running)"
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(rexc.ConnectionError, _redis_down)
    app.add_exception_handler(rexc.TimeoutError, _redis_down)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"message": f"internal error ({type(exc).__name__}); the server log has details"},
            status_code=500,
        )

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        # a name the file system cannot take came from the client (routes check paths first;
        # this is the net under anything that takes a name); other OS errors are ours: 500
        if exc.errno == errno.ENAMETOOLONG:
            return JSONResponse(
                {"message": "refused: a name in the request is too long for the file system"},
                status_code=400,
            )
        return await _internal(request, exc)

    app.include_router(seed_router(settings))
    app.include_router(rooms_router(settings))
    app.include_router(live_router(settings))
    app.include_router(v1_router(settings))
    app.include_router(feedback_router(settings))
    app.include_router(avatars_router(settings))  # the demo page's uploads, avatar list
    app.include_router(system_router(settings))  # GET /v1/engines

    # middleware: the last added runs first (CORS answers preflights before the key check)
    if keys:
        _declare_api_key(app)
    from digihuman.api.avatars import MAX_UPLOAD_BYTES, UPLOAD_PATH
    from digihuman.api.rooms import ANSWER_UPLOAD_PATH, UPLOAD_OVERHEAD

    uploads = [(ANSWER_UPLOAD_PATH, settings.rooms.max_answer_bytes + UPLOAD_OVERHEAD)]
    uploads.append((UPLOAD_PATH, MAX_UPLOAD_BYTES))
    app.add_middleware(GuardMiddleware, api_keys=keys, upload_limits=uploads)
    if api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=api.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["X-API-Key", "Content-Type", "Range"],
            expose_headers=["Content-Range", "Accept-Ranges"],
        )
    return app


def api_keys(api: ApiSettings) -> list[tuple[str, str]]:
    """(name, key) of every configured key: ``api_key`` (named "default") and ``api_keys``."""
    keys: list[tuple[str, str]] = []
    if api.api_key is not None and api.api_key.get_secret_value():
        keys.append(("default", api.api_key.get_secret_value()))
    keys += [(k.name, k.key.get_secret_value()) for k in api.api_keys]
    names = [n for n, _ in keys]
    secrets = [k for _, k in keys]
    if len(set(names)) != len(names) or len(set(secrets)) != len(secrets) or "" in secrets:
        raise DigihumanError(
            "api.api_keys: every key needs a distinct name and a distinct, non-empty key "
            '("default" is the name of DIGIHUMAN_API_KEY)'
        )
    return keys


def _declare_api_key(app: FastAPI) -> None:
    """Show the API key (header or query parameter) in the OpenAPI schema and on /docs."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "key"},
            }
            schema["security"] = [{"ApiKeyHeader": []}, {"ApiKeyQuery": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def app_from_env() -> Any:
    """Uvicorn factory (``uvicorn --factory digihuman.api.app:app_from_env``)."""
    from digihuman.config import load_settings
    from digihuman.observability import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings)
