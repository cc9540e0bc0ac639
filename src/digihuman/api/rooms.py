"""Rooms routes: the seed's ``/create/zbj`` and ``/create/zbjv2``, ``GET /v1/rooms/{zbjname}``,
answers (``POST /v1/rooms/{zbjname}/answers/{index}``: a streamed multipart upload, then an
``answer`` job and, for a video, a ``bqfk`` job) and the report (``GET .../report`` as JSON,
or HTML with ``Accept: text/html`` or ``.../report.html``).

:func:`open_rooms` (called from the app's lifespan) opens the database, builds the question
engine and starts the clip conductor; :func:`rooms_router` holds the routes.
"""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from digihuman.api.service import ClientGone, Service
from digihuman.config import Settings
from digihuman.errors import NotFoundError
from digihuman.rooms.clips import ClipConductor, clip_progress
from digihuman.rooms.service import Rooms
from digihuman.rooms.store import AnswerView, RoomView

log = logging.getLogger(__name__)

SHORT = 256
ZBJNAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
MAX_INDEX = 1000
ANSWER_UPLOAD_PATH = r"/v1/rooms/[a-z0-9][a-z0-9-]{0,62}/answers/[0-9]{1,4}"
"""The upload route's paths: the API's body guard bounds them by the upload cap, not 1 MiB."""
UPLOAD_OVERHEAD = 1024 * 1024  # multipart headers and small fields on top of the file
FEED_BYTES = 1024 * 1024  # body pieces are handed to the writer thread in about this size
TOUCH_EVERY_S = 30.0  # a long upload keeps its room open


class ZbjMessage(BaseModel):
    message: str


class ZbjV2(BaseModel):
    zbjname: str
    question: list[str]


class ErrorBody(BaseModel):
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 410, 413, 415, 422, 429, 503)
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
        "answers": [answer_json(view.zbjname, a) for a in view.answers],
    }


def answer_json(zbjname: str, a: AnswerView, *, data: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": a.index,
        "status": a.status,
        "media": a.media_path,
        "media_type": a.media_type,
        "content_type": a.content_type,
        "bytes": a.media_bytes,
        "duration_s": a.duration_s,
        "job": a.job_id,
        "bqfk_job": a.bqfk_job,
        "error": a.error,
        "created": a.created_at,
        "updated": a.updated_at,
        "report": f"/v1/rooms/{zbjname}/report",
    }
    if data:
        out.update(a.data)
    return out


def _feedback(rt: RoomsRuntime, zbjname: str) -> dict[int, dict[str, Any]]:
    """The stored expression feedback of the room's answers (msId = zbjname), by index."""
    from digihuman.rooms.feedback import FeedbackStore

    rows = FeedbackStore(rt.rooms.store.engine).list(zbjname)  # same database; not closed here
    return {v.index: v.to_dict() for v in rows}


async def receive_answer(
    request: Request, settings: Settings, zbjname: str, index: int
) -> dict[str, Any]:
    """Stream the upload to disk, check it, store the answer, enqueue its jobs."""
    from starlette.requests import ClientDisconnect

    from digihuman.rooms.answers import UploadSink, probe_answer

    rt = _rt(request)
    svc: Service = request.app.state.service
    store = rt.rooms.store
    view = await asyncio.to_thread(store.touch, zbjname)  # 404 / activity before the body
    if view.status == "closed":
        await asyncio.to_thread(store.require, zbjname, open_=True)  # raises RoomClosed (410)
    if not any(q.index == index for q in view.questions):
        raise NotFoundError(
            f"room {zbjname} has no question {index} (it has {len(view.questions)})"
        )
    token = secrets.token_hex(4)
    dest = svc.data_root.tests / "answers" / f"{zbjname}_{index}-{token}"
    sink = UploadSink(
        request.headers.get("content-type"), dest, limit=settings.rooms.max_answer_bytes
    )
    t0 = last_touch = time.monotonic()
    final = None
    try:
        pieces: list[bytes] = []
        held = 0
        async for chunk in request.stream():
            pieces.append(chunk)
            held += len(chunk)
            if held >= FEED_BYTES:
                await asyncio.to_thread(sink.feed, b"".join(pieces))
                pieces, held = [], 0
            if time.monotonic() - last_touch > TOUCH_EVERY_S:
                last_touch = time.monotonic()
                await asyncio.to_thread(store.touch, zbjname)
        if pieces:
            await asyncio.to_thread(sink.feed, b"".join(pieces))
        upload = await asyncio.to_thread(sink.finish)
        upload_s = time.monotonic() - t0
        final = sink.commit(upload)
        info = await asyncio.to_thread(probe_answer, final)
    except ClientDisconnect:
        sink.abort()
        raise ClientGone(f"the upload of answer {index} of room {zbjname} was cut off") from None
    except BaseException:
        sink.abort()
        if final is not None:
            final.unlink(missing_ok=True)
        raise
    rel = svc.data_root.relative(final)
    job_id = f"{zbjname}_{index}-answer-{token}"
    bqfk_job = f"{zbjname}_{index}-bqfk-{token}" if info["media_type"] == "video" else None
    try:
        answer, old = await asyncio.to_thread(
            store.put_answer,
            zbjname,
            index,
            media_path=rel,
            media_type=info["media_type"],
            content_type=upload.content_type,
            media_bytes=upload.size,
            duration_s=info["duration_s"],
            job_id=job_id,
            bqfk_job=bqfk_job,
        )
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    try:
        await svc.enqueue("answer", {"room": zbjname, "index": index, "media": rel}, job_id)
    except Exception as e:  # the upload stands; a new upload of this answer retries
        await asyncio.to_thread(
            store.update_answer,
            zbjname,
            index,
            job_id=job_id,
            status="failed",
            error=f"the analysis could not be queued ({e}); upload the answer again",
        )
        raise
    if bqfk_job is not None:
        try:
            payload = {"source": rel, "url": rel, "msId": zbjname, "index": index}
            await svc.enqueue("bqfk", payload, bqfk_job)
        except Exception as e:  # the answer's own analysis is queued; this part is missing
            log.warning("room %s answer %d: expression analysis not queued: %s", zbjname, index, e)
    if old:
        with contextlib.suppress(OSError, ValueError):
            svc.data_root.resolve(old).unlink(missing_ok=True)
    body = answer_json(zbjname, answer)
    body["upload_s"] = round(upload_s, 3)
    body["upload_mb_per_s"] = round(upload.size / 1e6 / upload_s, 1) if upload_s > 0 else None
    return body


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

    RoomName = Annotated[str, PathParam(pattern=ZBJNAME)]
    Index = Annotated[int, PathParam(ge=0, le=MAX_INDEX)]

    @r.post(
        "/v1/rooms/{zbjname}/answers/{index}",
        tags=["v1"],
        status_code=202,
        summary="Upload the candidate's answer (audio or video) to one question",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    }
                },
            }
        },
    )
    async def v1_answer(request: Request, zbjname: RoomName, index: Index) -> Any:
        """A multipart/form-data upload with the recording in a file field (WAV, MP3, AAC,
        FLAC, Ogg, MP4/MOV/M4A, WebM/Matroska; at most ``rooms.max_answer_bytes``), written to
        disk as it arrives. Then, as queued jobs: the transcript with word timings, delivery
        metrics, a content evaluation when an LLM is configured (``answer``), and for a video
        the expression analysis (``bqfk``, msId = zbjname). A new upload replaces the earlier
        answer. 202 with the answer; follow it at ``GET /v1/rooms/{zbjname}/answers/{index}``.
        Wrong type → 415, over the cap → 413, room closed → 410: nothing is kept."""
        from digihuman.api.routes import _limit

        _limit(request)
        body = await receive_answer(request, settings, zbjname, index)
        return JSONResponse(
            body,
            status_code=202,
            headers={"Location": f"/v1/rooms/{zbjname}/answers/{index}"},
        )

    @r.get("/v1/rooms/{zbjname}/answers/{index}", tags=["v1"], summary="One answer's results")
    async def v1_answer_get(request: Request, zbjname: RoomName, index: Index) -> Any:
        """The answer: its status (uploaded → analysing → done | failed), the media, and once
        analysed the transcript (with word timings), delivery metrics and evaluation."""
        rt = _rt(request)
        await asyncio.to_thread(rt.rooms.store.require, zbjname)
        a = await asyncio.to_thread(rt.rooms.store.get_answer, zbjname, index)
        if a is None:
            raise NotFoundError(f"room {zbjname} has no answer to question {index} yet")
        return answer_json(zbjname, a, data=True)

    async def _report(request: Request, zbjname: str) -> dict[str, Any]:
        from digihuman.rooms.report import build_report

        rt = _rt(request)
        view = await asyncio.to_thread(rt.rooms.store.require, zbjname)
        feedback = await asyncio.to_thread(_feedback, rt, zbjname)
        return build_report(
            view,
            feedback,
            chart_url=f"/v1/feedback/{zbjname}/chart.png?index={{index}}",
        )

    def _html(request: Request, report: dict[str, Any]) -> HTMLResponse:
        from digihuman.rooms.report import render_html

        key = request.query_params.get("key")
        suffix = f"?key={quote(key, safe='')}" if key else ""
        return HTMLResponse(render_html(report, link_suffix=suffix))

    @r.get(
        "/v1/rooms/{zbjname}/report",
        tags=["v1"],
        summary="The candidate's report (JSON, or HTML with Accept: text/html)",
        responses={200: {"content": {"application/json": {}, "text/html": {}}}},
    )
    async def v1_report(request: Request, zbjname: RoomName) -> Any:
        """Each question with its clip, the answer's transcript, delivery metrics, content
        evaluation and expression feedback (with its chart), and the three most useful
        suggestions, in the room's language."""
        report = await _report(request, zbjname)
        if "text/html" in request.headers.get("accept", ""):
            return _html(request, report)
        return report

    @r.get(
        "/v1/rooms/{zbjname}/report.html",
        tags=["v1"],
        response_class=HTMLResponse,
        summary="The candidate's report as a web page",
    )
    async def v1_report_html(request: Request, zbjname: RoomName) -> Any:
        return _html(request, await _report(request, zbjname))

    return r
