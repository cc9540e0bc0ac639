"""Routes: the seed's GET endpoints (exact compatibility) and the typed /v1 API."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time, and
# the route closures refer to settings values (bounds) that a string annotation cannot see

import asyncio
import contextlib
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from digihuman.api.service import Service
from digihuman.config import Settings
from digihuman.errors import DigihumanError, InputError, NotFoundError, TooLarge
from digihuman.jobs.fetch import check_url, is_url
from digihuman.jobs.handlers import ArrivesLater
from digihuman.jobs.queue import JobRecord

JOB_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SHORT = 256  # bound on names (username, zbjname, msId, job)
URL_MAX = 2048
NAME_MAX = 255  # bytes in one path component (Linux file systems)
BBOX_SHIFT_MAX = 100  # px; MuseTalk's own range for a face is about ±15-40
DOWNLOADABLE = ("tests", "results", "audios", "data")  # not redis/ (queue data) nor models/


class Message(BaseModel):
    """The seed's response shape."""

    message: str


class ErrorBody(BaseModel):
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 501, 503, 504)
}


class BadPath(DigihumanError):
    """A data-root path the file system cannot take (a component over 255 bytes, ...)."""

    http_status = 400


class Timeout(DigihumanError):
    """A bounded wait ran out."""

    http_status = 504


class JobFailed(DigihumanError):
    """A job ended without a result; the status is the one its error carried (500 if none)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.http_status = status or 500


def _svc(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def _limit(request: Request) -> None:
    """The rate limits on work requests: per API key (when the key has one), per address (opt-in,
    ``api.rate_limit_per_minute``)."""
    state = request.app.state
    client = request.client.host if request.client else "?"
    wait, who = state.limiter.take(client), "from this address"
    key = getattr(request.state, "api_key", None)
    if not wait and key in state.key_limiters:
        wait, who = state.key_limiters[key].take(key), f"for API key {key!r}"
    if wait > 0:
        from fastapi import HTTPException

        raise HTTPException(
            429,
            f"rate limit: too many work requests {who}; retry in {wait:.1f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def _data_path(svc: Service, user_path: str) -> Path:
    """An existing path under the data root named by a client, or a 4xx saying why not."""
    for part in user_path.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise BadPath(
                f"refused path {user_path[:60]!r}...: a path component is longer than "
                f"{NAME_MAX} bytes"
            )
    try:
        return svc.data_root.resolve(user_path, must_exist=True)
    except OSError as exc:  # what the file system refuses is the client's input here
        raise BadPath(f"refused path {user_path[:60]!r}: {exc.strerror or exc}") from None


def _check_text(text: str, max_chars: int) -> str:
    text = text.strip()
    if not text:
        raise InputError("nothing to say: the text is empty")
    if len(text) > max_chars:
        raise TooLarge(f"text is {len(text)} characters; the limit is {max_chars}")
    return text


async def _check_source(svc: Service, url: str) -> str:
    """An audio/video source: an allow-listed http(s) URL or an existing data-root file."""
    api = svc.settings.api
    if is_url(url):  # the worker decides the same way (jobs.fetch.is_url)
        await asyncio.to_thread(
            check_url, url, allowlist=api.url_allowlist, allow_private=api.allow_private_urls
        )
        return url
    path = _data_path(svc, url)
    if not path.is_file():
        raise InputError(f"{url} is not a file")
    return url


def _raise_for(rec: JobRecord | None, job_id: str, waited: float, what: str) -> JobRecord:
    if rec is None:
        raise NotFoundError(f"job {job_id} has no record (expired?)")
    if not rec.done:
        raise Timeout(
            f"{what} not finished after {waited:g} s (job {job_id}, status {rec.status}); "
            f"follow it at /v1/jobs/{job_id}"
        )
    if rec.status != "done":
        raise JobFailed(f"{what} failed: {rec.error or rec.status}", rec.error_status)
    return rec


def _check_avatar(svc: Service, avatar_id: str) -> None:
    """A prepared avatar a render names without a source: there, or a 4xx now."""
    from digihuman.avatar.store import AvatarStore

    store = AvatarStore(svc.data_root.avatars)
    store.check_id(avatar_id)
    if not store.exists(avatar_id):
        raise NotFoundError(
            f"no prepared avatar {avatar_id!r} (GET /v1/avatars lists them); give a source to "
            "prepare it"
        )


def _arrives(feature: str, issue: str) -> ArrivesLater:
    return ArrivesLater(
        f"{feature} arrives with {issue}; this server routes it but cannot do it yet"
    )


# --------------------------------------------------------------------------------------------
# seed endpoints
# --------------------------------------------------------------------------------------------


def seed_router(settings: Settings) -> APIRouter:
    api = settings.api
    r = APIRouter(tags=["seed"], responses=ERRORS)

    Name = Annotated[str, Query(min_length=1, max_length=SHORT)]
    Url = Annotated[str, Query(min_length=1, max_length=URL_MAX)]

    @r.get("/tts", response_model=Message, summary="Text to speech (answers at once)")
    async def tts(
        request: Request,
        msg: Annotated[str, Query(description="text to speak", max_length=100_000)],
        wait: Annotated[
            float | None,
            Query(ge=0, le=api.max_wait_s, description="block until the file exists (s)"),
        ] = None,
        voice: Annotated[str | None, Query(max_length=SHORT)] = None,
        language: Annotated[str | None, Query(max_length=16)] = None,
    ) -> Any:
        """Enqueue speech for ``msg``; answers ``{"message": "tests/<uuid>.wav"}`` at once.

        The file appears at that path (relative to the data root) when the TTS worker is done,
        written atomically. With ``wait`` the call returns once the file exists (200), or when
        the wait is over (202, same body: the file is still coming).
        """
        _limit(request)
        text = _check_text(msg, min(api.max_text_chars, settings.tts.max_chars))
        svc = _svc(request)
        from digihuman.jobs.queue import new_job_id

        job_id = new_job_id()
        rel = f"tests/{job_id}.wav"
        payload = {"text": text, "voice": voice, "language": language, "output": rel}
        if not wait:
            await svc.enqueue("tts", payload, job_id)
            return {"message": rel}
        async with svc.wait_slot():
            await svc.enqueue("tts", payload, job_id)
            rec = await svc.wait(job_id, wait, request.receive)
        if rec is not None and not rec.done:  # accepted, not ready yet: same body, 202
            return JSONResponse({"message": rel}, status_code=202)
        _raise_for(rec, job_id, wait, "speech")
        return {"message": rel}

    @r.get("/asr", response_model=Message, summary="Speech recognition (waits for the text)")
    async def asr(
        request: Request,
        url: Url,
        language: Annotated[str | None, Query(max_length=16)] = None,
    ) -> Any:
        """Transcribe ``url`` (a data-root path like ``tests/<key>.wav``, or an allow-listed
        http(s) URL); answers ``{"message": "<text>"}``."""
        _limit(request)
        svc = _svc(request)
        source = await _check_source(svc, url)
        timeout = api.request_timeout_s
        async with svc.wait_slot():
            job_id = await svc.enqueue("asr", {"source": source, "language": language})
            got = await svc.wait(job_id, timeout, request.receive)
        rec = _raise_for(got, job_id, timeout, "speech recognition")
        return {"message": str((rec.result or {}).get("text", ""))}

    @r.get("/bqfk", response_model=Message, summary="Expression feedback on a video")
    async def bqfk(
        url: Url,
        msId: Name,
        index: Annotated[int, Query(ge=0, le=1_000_000)],
        request: Request,
    ) -> Any:
        """Analyse the answer video ``url`` (a data-root path or an allow-listed http(s) URL)
        for (``msId``, ``index``); answers ``{"message": "success"}`` at once. The result
        appears at ``/v1/feedback/{msId}``."""
        from digihuman.api.feedback import feedback_store
        from digihuman.jobs.queue import new_job_id
        from digihuman.rooms.feedback import check_index, check_ms_id

        _limit(request)
        check_ms_id(msId)
        check_index(index)
        svc = _svc(request)
        source = await _check_source(svc, url)
        store = await feedback_store(request)
        job_id = new_job_id()
        payload = {"source": source, "msId": msId, "index": index}
        # the row first: a worker that starts at once must find it queued, not be overwritten
        await asyncio.to_thread(store.queue, msId, index, job_id=job_id, source=source)
        try:
            await svc.enqueue("bqfk", payload, job_id)
        except BaseException as exc:
            await asyncio.to_thread(
                store.fail, msId, index, job_id=job_id, error=f"not queued: {exc}"
            )
            raise
        return {"message": "success"}

    return r


# --------------------------------------------------------------------------------------------
# /v1
# --------------------------------------------------------------------------------------------


class TTSRequest(BaseModel):
    text: str = Field(min_length=1, max_length=100_000)
    voice: str | None = Field(default=None, max_length=SHORT)
    language: str | None = Field(default=None, max_length=16)
    wait: float | None = Field(default=None, ge=0, le=600, description="block up to s")


class ASRRequest(BaseModel):
    url: str = Field(min_length=1, max_length=URL_MAX, description="data-root path or URL")
    language: str | None = Field(default=None, max_length=16)
    wait: float | None = Field(default=None, ge=0, le=600)


class RenderRequest(BaseModel):
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=URL_MAX,
        description="portrait image/video; may be left out when avatar_id names a prepared one",
    )
    audio: str = Field(min_length=1, max_length=URL_MAX, description="speech (data-root path)")
    avatar_id: str | None = Field(
        default=None, max_length=64, description="cache the prepared avatar under this id"
    )
    save_frames: bool = False
    engine: str | None = Field(
        default=None,
        max_length=32,
        description="lip-sync engine (GET /v1/engines); null: the server's default",
    )
    bbox_shift: int | None = Field(
        default=None,
        ge=-BBOX_SHIFT_MAX,
        le=BBOX_SHIFT_MAX,
        description="MuseTalk v1: px shift of the mask's upper edge; null: the engine's setting; "
        "ignored (result bbox_shift null) by engines without it",
    )


class BqfkRequest(BaseModel):
    url: str = Field(min_length=1, max_length=URL_MAX)
    msId: str = Field(min_length=1, max_length=SHORT)
    index: int = Field(ge=0, le=1_000_000)


class RoomRequest(BaseModel):
    username: str = Field(min_length=1, max_length=SHORT)
    job: str | None = Field(default=None, max_length=SHORT)
    count: int | None = Field(default=None, ge=1, le=50)


class JobView(BaseModel):
    id: str
    kind: str
    status: str
    progress: float
    message: str
    attempts: int
    result: dict[str, Any] | None
    error: str | None
    created: float
    updated: float


async def _enqueue_and_wait(
    request: Request, kind: str, payload: dict[str, Any], wait: float, job_id: str | None = None
) -> JSONResponse:
    """Enqueue, then wait up to ``wait`` seconds (holding a wait slot) when asked to."""
    svc = _svc(request)
    if wait <= 0:
        job_id = await svc.enqueue(kind, payload, job_id)
        return _accepted(await svc.get(job_id), job_id, kind)
    async with svc.wait_slot():
        job_id = await svc.enqueue(kind, payload, job_id)
        rec = await svc.wait(job_id, wait, request.receive)
    return _accepted(rec, job_id, kind)


def _accepted(rec: JobRecord | None, job_id: str, kind: str) -> JSONResponse:
    if rec is not None and rec.done:
        return JSONResponse(rec.public(), status_code=200)
    body = (
        rec.public()
        if rec is not None
        else {"id": job_id, "kind": kind, "status": "queued", "progress": 0.0}
    )
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


def v1_router(settings: Settings) -> APIRouter:
    api = settings.api
    r = APIRouter(responses=ERRORS)

    @r.post("/v1/tts", tags=["v1"], status_code=202, response_model=JobView)
    async def v1_tts(request: Request, req: Annotated[TTSRequest, Body()]) -> Any:
        """Enqueue speech; the result's ``path`` is ``tests/<job id>.wav``."""
        _limit(request)
        text = _check_text(req.text, min(api.max_text_chars, settings.tts.max_chars))
        from digihuman.jobs.queue import new_job_id

        job_id = new_job_id()
        payload = {
            "text": text,
            "voice": req.voice,
            "language": req.language,
            "output": f"tests/{job_id}.wav",
        }
        wait = min(req.wait or 0.0, api.max_wait_s)
        return await _enqueue_and_wait(request, "tts", payload, wait, job_id)

    @r.post("/v1/asr", tags=["v1"], status_code=202, response_model=JobView)
    async def v1_asr(request: Request, req: Annotated[ASRRequest, Body()]) -> Any:
        """Enqueue speech recognition; the result has ``text``, ``language``, ``duration``."""
        _limit(request)
        svc = _svc(request)
        source = await _check_source(svc, req.url)
        wait = min(req.wait or 0.0, api.max_wait_s)
        payload = {"source": source, "language": req.language}
        return await _enqueue_and_wait(request, "asr", payload, wait)

    @r.post("/v1/render", tags=["v1"], status_code=202, response_model=JobView)
    async def v1_render(request: Request, req: Annotated[RenderRequest, Body()]) -> Any:
        """Enqueue an offline render (portrait + speech → MP4 under results/output/).

        ``engine`` (null: the server's default) must be one ``GET /v1/engines`` lists as
        available: an unknown one is a 400, one whose weights are missing or fail verification
        a 409 naming the files and the command that fetches them. ``bbox_shift`` applies to
        engines that take it (MuseTalk v1.0); others accept it and report ``bbox_shift: null``
        (and ``ignored``) in the job's result, which records the engine used."""
        from digihuman.api.system import availability

        _limit(request)
        svc = _svc(request)
        for p in (req.source, req.audio):
            if p is not None:
                _data_path(svc, p)
        if req.source is None:
            if not req.avatar_id:
                raise InputError("give a source (a data-root image or video) or an avatar_id")
            await asyncio.to_thread(_check_avatar, svc, req.avatar_id)
        status = await asyncio.to_thread(availability(request).require_lipsync, req.engine)
        payload = {**req.model_dump(), "engine": status.name}
        return await _enqueue_and_wait(request, "render", payload, 0.0)

    @r.post("/v1/bqfk", tags=["v1"], status_code=202)
    async def v1_bqfk(request: Request, req: Annotated[BqfkRequest, Body()]) -> Any:
        """Queue the expression analysis of ``url`` for (``msId``, ``index``); answers 202 with
        the job id; the result appears at ``/v1/feedback/{msId}``."""
        from digihuman.api.feedback import feedback_store
        from digihuman.jobs.queue import new_job_id
        from digihuman.rooms.feedback import check_index, check_ms_id

        _limit(request)
        check_ms_id(req.msId)
        check_index(req.index)
        svc = _svc(request)
        source = await _check_source(svc, req.url)
        store = await feedback_store(request)
        job_id = new_job_id()
        await asyncio.to_thread(store.queue, req.msId, req.index, job_id=job_id, source=source)
        try:
            payload = {"source": source, "msId": req.msId, "index": req.index}
            await svc.enqueue("bqfk", payload, job_id)
        except BaseException as exc:
            await asyncio.to_thread(
                store.fail, req.msId, req.index, job_id=job_id, error=f"not queued: {exc}"
            )
            raise
        return JSONResponse(
            {"id": job_id, "status": "queued", "feedback": f"/v1/feedback/{req.msId}"},
            status_code=202,
        )

    @r.post("/v1/rooms", tags=["v1"])
    async def v1_rooms(req: Annotated[RoomRequest, Body()]) -> Any:
        raise _arrives("live rooms", "[5/7]")

    @r.get("/v1/jobs/{job_id}", tags=["v1"], response_model=JobView)
    async def v1_job(
        request: Request,
        job_id: Annotated[str, PathParam(pattern=JOB_ID)],
        wait: Annotated[float | None, Query(ge=0, le=api.max_wait_s)] = None,
    ) -> Any:
        """A job's record; with ``wait`` the call blocks until it ends (or the wait is over)."""
        svc = _svc(request)
        if wait:
            async with svc.wait_slot():
                rec = await svc.wait(job_id, wait, request.receive)
        else:
            rec = await svc.get(job_id)
        if rec is None:
            raise NotFoundError(f"no job {job_id} (never existed, or its record expired)")
        return rec.public()

    @r.get("/v1/files/{path:path}", tags=["v1"], response_class=FileResponse)
    async def v1_file(request: Request, path: Annotated[str, PathParam(max_length=URL_MAX)]) -> Any:
        """Download a file under the data root (``Range`` requests supported, for video)."""
        svc = _svc(request)
        root = svc.data_root
        p = _data_path(svc, path)
        top = root.relative(p).split("/", 1)[0]
        if top not in DOWNLOADABLE or not p.is_file() or p.name.startswith("."):
            raise NotFoundError(
                f"no such file in the data root: {path} (downloads come from "
                f"{', '.join(f'{d}/' for d in DOWNLOADABLE)})"
            )
        return FileResponse(p)

    @r.get("/healthz", tags=["ops"])
    async def healthz() -> Any:
        """The process is alive (no dependencies checked)."""
        return {"status": "ok"}

    @r.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> Any:
        """Ready when Redis answers and each job kind has a live worker."""
        svc = _svc(request)
        await svc.r.ping()
        workers = await svc.live_workers()
        unready = await svc.unready_workers()  # alive, but a job thread died: not counted
        missing = [k for k, n in workers.items() if n == 0]
        if missing:
            why = "".join(
                f" ({len(unready[k])} {k} worker(s) with a dead job thread)"
                for k in missing
                if k in unready
            )
            return JSONResponse(
                {
                    "message": f"not ready: no live worker for {', '.join(missing)}{why}",
                    "redis": True,
                    "workers": workers,
                    "unready": unready,
                },
                status_code=503,
            )
        return {"status": "ready", "redis": True, "workers": workers, "unready": unready}

    @r.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Any:
        """Prometheus metrics (queue gauges are refreshed on each scrape)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        with contextlib.suppress(Exception):  # metrics still answer while Redis is down
            await _svc(request).refresh_gauges()
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return r
