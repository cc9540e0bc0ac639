"""Rooms routes: the seed's ``/create/zbj`` and ``/create/zbjv2``, and ``GET /v1/rooms/{zbjname}``.

:func:`open_rooms` (called from the app's lifespan) opens the database, builds the question
engine and starts the clip conductor; :func:`rooms_router` holds the routes.
"""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel

from digihuman.api.service import Service
from digihuman.config import Settings
from digihuman.rooms.clips import ClipConductor, clip_progress
from digihuman.rooms.service import Rooms
from digihuman.rooms.store import RoomView

log = logging.getLogger(__name__)

SHORT = 256
ZBJNAME = r"^[a-z0-9][a-z0-9-]{0,62}$"


class ZbjMessage(BaseModel):
    message: str


class ZbjV2(BaseModel):
    zbjname: str
    question: list[str]


class ErrorBody(BaseModel):
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 410, 413, 422, 429, 503)
}


class RoomsRuntime:
    """What the lifespan opens: the rooms service and the conductor task."""

    def __init__(self, rooms: Rooms, conductor: ClipConductor | None) -> None:
        self.rooms = rooms
        self.conductor = conductor
        self.task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.conductor is not None:
            self.conductor.stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await asyncio.to_thread(self.rooms.close)


async def open_rooms(app: FastAPI, settings: Settings, svc: Service) -> RoomsRuntime:
    """Open the database (migrating it), the question engine and the clip conductor."""
    rooms = await asyncio.to_thread(Rooms.open, settings.rooms, settings.questions, svc.data_root)
    conductor = None
    if settings.rooms.clips:

        async def enqueue(kind: str, payload: dict[str, Any], job_id: str) -> None:
            await svc.enqueue(kind, payload, job_id)

        async def records(ids: Sequence[str]) -> dict[str, Any]:
            from digihuman.jobs.queue import parse_record

            pipe = svc.r.pipeline(transaction=False)
            for j in ids:
                pipe.hgetall(svc.keys.record(j))
            rows = await pipe.execute()
            return {j: parse_record(row, j) for j, row in zip(ids, rows, strict=True)}

        async def wait_any(ids: Sequence[str], timeout_s: float) -> None:
            streams = {svc.keys.result(j): "0" for j in dict.fromkeys(ids)}
            await svc.rw.xread(streams, count=1, block=max(1, int(timeout_s * 1000)))

        conductor = ClipConductor(
            rooms.store,
            svc.data_root,
            enqueue=enqueue,
            records=records,
            wait_any=wait_any,
            tick_s=settings.rooms.tick_s,
            sweep_interval_s=settings.rooms.sweep_interval_s,
        )
    rt = RoomsRuntime(rooms, conductor)
    if conductor is not None:
        rt.task = asyncio.create_task(conductor.run(), name="rooms-clip-conductor")
    app.state.rooms = rt
    return rt


def _rt(request: Request) -> RoomsRuntime:
    rt: RoomsRuntime = request.app.state.rooms
    return rt


async def _kick(rt: RoomsRuntime, zbjname: str) -> None:
    """Enqueue a new room's first jobs now (the conductor's loop retries if Redis refuses)."""
    if rt.conductor is None:
        return
    try:
        await rt.conductor.step(only=zbjname)
    except Exception as e:
        log.warning("room %s: clips not started yet (%s); the conductor retries", zbjname, e)


async def room_json(rt: RoomsRuntime, svc: Service, view: RoomView) -> dict[str, Any]:
    ids = [
        j
        for q in view.questions
        if q.clip_status in ("speech", "render")
        for j in ((q.tts_job if q.clip_status == "speech" else q.render_job),)
        if j
    ]
    recs: dict[str, Any] = {}
    if ids:
        from digihuman.jobs.queue import parse_record

        try:
            pipe = svc.r.pipeline(transaction=False)
            for j in ids:
                pipe.hgetall(svc.keys.record(j))
            rows = await pipe.execute()
            recs = {j: parse_record(row, j) for j, row in zip(ids, rows, strict=True)}
        except Exception as e:  # Redis down: the database state is still worth showing
            log.debug("room progress without job records: %s", e)
    questions = []
    for q in view.questions:
        job = q.tts_job if q.clip_status == "speech" else q.render_job
        rec = recs.get(job) if job else None
        questions.append(
            {
                "index": q.index,
                "text": q.text,
                "competency": q.competency,
                "family": q.family,
                "bank_id": q.bank_id,
                "suggested_s": q.suggested_s,
                "clip": {
                    "status": q.clip_status,
                    "progress": clip_progress(q, rec),
                    "message": rec.message if rec is not None else None,
                    "audio": q.audio_path,
                    "video": q.video_path,
                    "error": q.clip_error,
                    "tts_job": q.tts_job,
                    "render_job": q.render_job,
                },
            }
        )
    return {
        "zbjname": view.zbjname,
        "owner": view.owner,
        "job": view.job,
        "families": list(view.families),
        "language": view.language,
        "avatar": view.avatar,
        "status": view.status,
        "question_engine": view.question_engine,
        "seed": view.seed,
        "fallback": view.meta.get("fallback"),
        "inactivity_timeout_s": view.timeout_s,
        "created": view.created_at,
        "updated": view.updated_at,
        "last_activity": view.last_activity_at,
        "expires": view.expires_at,
        "closed": view.closed_at,
        "close_reason": view.close_reason,
        "clips_ready": sum(q.clip_status == "ready" for q in view.questions),
        "questions": questions,
        "answers": [
            {"index": a.index, "status": a.status, "media": a.media_path} for a in view.answers
        ],
    }


def rooms_router(settings: Settings) -> APIRouter:
    qs = settings.questions
    r = APIRouter(responses=ERRORS)
    Name = Annotated[str, Query(min_length=1, max_length=SHORT)]

    @r.get("/create/zbj", tags=["seed"], response_model=ZbjMessage, summary="Create a live room")
    async def create_zbj(request: Request, username: Name) -> Any:
        """A new room for ``username``; answers ``{"message": "<zbjname>"}`` (the seed's shape).

        The name is safe in URLs, file names and RTMP stream keys. The room closes after
        ``rooms.inactivity_timeout_s`` without activity.
        """
        view = await asyncio.to_thread(_rt(request).rooms.create_room, username)
        return {"message": view.zbjname}

    @r.get(
        "/create/zbjv2",
        tags=["seed"],
        response_model=ZbjV2,
        summary="Create a room and generate interview questions",
    )
    async def create_zbjv2(
        request: Request,
        username: Name,
        job: Name,
        count: Annotated[int, Query(ge=1, le=qs.max_count)],
        lang: Annotated[str | None, Query(max_length=16, description="zh | en")] = None,
        seed: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    ) -> Any:
        """``{"zbjname": ..., "question": [...]}`` as the seed. The questions follow the job
        title's script (Chinese or English) unless ``lang`` says otherwise; ``seed`` makes the
        draw reproducible. Each question's spoken clip (``tests/<zbjname>_<index>.wav`` and
        ``.mp4``) is then made on the queue; follow it at ``/v1/rooms/<zbjname>``."""
        from digihuman.api.routes import _limit

        _limit(request)  # it enqueues two jobs per question
        rt = _rt(request)
        view = await asyncio.to_thread(
            rt.rooms.create_interview, username, job, count, language=lang, seed=seed
        )
        await _kick(rt, view.zbjname)
        return {"zbjname": view.zbjname, "question": [q.text for q in view.questions]}

    @r.get("/v1/rooms/{zbjname}", tags=["v1"], summary="A room with each clip's progress")
    async def v1_room(request: Request, zbjname: Annotated[str, PathParam(pattern=ZBJNAME)]) -> Any:
        """The room: owner, job, language, status (created → ready → live → closed), its
        questions with each clip's status and progress (0-1), answers and timestamps."""
        rt = _rt(request)
        view = await asyncio.to_thread(rt.rooms.store.require, zbjname)
        svc: Service = request.app.state.service
        return await room_json(rt, svc, view)

    return r
