"""Expression feedback routes: ``GET /v1/feedback/{msId}`` (JSON of every analysed answer of
that msId) and ``GET /v1/feedback/{msId}/chart.png`` (a timeline chart, matplotlib Agg).

The results are written by the ``bqfk`` job (:func:`digihuman.jobs.handlers.make_bqfk`) into
the rooms database; the store is opened on first use and kept on ``app.state``.
"""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import asyncio
import io
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from digihuman.config import Settings
from digihuman.errors import NotFoundError
from digihuman.rooms.feedback import FeedbackStore, FeedbackView, check_ms_id

MAX_CHART_ANSWERS = 12


async def feedback_store(request: Request) -> FeedbackStore:
    """The app's feedback store (the rooms database), opened once."""
    state = request.app.state
    store: FeedbackStore | None = getattr(state, "feedback_store", None)
    if store is not None:
        return store
    lock = state.__dict__.setdefault("_feedback_lock", asyncio.Lock())
    async with lock:
        store = getattr(state, "feedback_store", None)
        if store is None:
            settings: Settings = request.app.state.service.settings
            store = await asyncio.to_thread(open_feedback_store, settings)
            state.feedback_store = store
    return store


def open_feedback_store(settings: Settings) -> FeedbackStore:
    from digihuman.rooms.db import default_url, open_database

    return FeedbackStore(
        open_database(settings.rooms.database_url or default_url(settings.data_dir))
    )


def render_chart(rows: list[FeedbackView]) -> bytes:
    """One panel pair per answer: expression probabilities over time (stacked), and head yaw /
    pitch with the looking-at-camera band; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must come before pyplot
    from matplotlib.figure import Figure

    from digihuman.engines.expression.base import EMOTIONS

    colors = {
        "angry": "#d62728",
        "disgust": "#8c564b",
        "fear": "#9467bd",
        "happy": "#2ca02c",
        "sad": "#1f77b4",
        "surprise": "#ff7f0e",
        "neutral": "#bbbbbb",
    }
    rows = rows[:MAX_CHART_ANSWERS]
    fig = Figure(figsize=(10, 3.2 * len(rows)), dpi=90)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (ax_e, ax_p), row in zip(axes, rows, strict=True):
        tl = row.data.get("timeline") or []
        t = [p["t"] for p in tl]
        title = f"answer {row.index}"
        if row.status != "done":
            title += f" ({row.status})"
        if tl:
            stacks = [
                [(p["emotions"] or {}).get(k, 0.0) if p.get("emotions") else 0.0 for p in tl]
                for k in EMOTIONS
            ]
            ax_e.stackplot(t, stacks, labels=EMOTIONS, colors=[colors[k] for k in EMOTIONS])
            face = [0.0 if p.get("face") else 1.0 for p in tl]
            ax_e.fill_between(t, 0, face, step="mid", color="black", alpha=0.15, label="no face")
            yaw = [p["yaw"] if p.get("yaw") is not None else float("nan") for p in tl]
            pitch = [p["pitch"] if p.get("pitch") is not None else float("nan") for p in tl]
            ax_p.plot(t, yaw, label="yaw", color="#1f77b4")
            ax_p.plot(t, pitch, label="pitch", color="#ff7f0e")
            opts = row.data.get("options") or {}
            lim = float(opts.get("max_yaw", 20.0))
            ax_p.axhspan(-lim, lim, color="#2ca02c", alpha=0.1, label="facing the camera")
        else:
            ax_e.text(0.5, 0.5, row.error or "no frames yet", ha="center", va="center", wrap=True)
        visible = row.data.get("face_visible")
        looking = row.data.get("looking_at_camera")
        if visible is not None:
            title += f": face {visible:.0%}, facing camera {looking or 0:.0%}"
        ax_e.set_title(title, fontsize=9)
        ax_e.set_ylim(0, 1)
        ax_e.set_xlabel("s")
        ax_e.set_ylabel("expression")
        ax_p.set_ylim(-60, 60)
        ax_p.set_xlabel("s")
        ax_p.set_ylabel("degrees")
        ax_p.set_title("head pose", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="upper right", ncol=2)
    axes[0][1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def feedback_router(settings: Settings) -> APIRouter:
    r = APIRouter(tags=["feedback"])
    MsId = Annotated[str, PathParam(min_length=1, max_length=128)]

    async def _rows(request: Request, ms_id: str) -> list[FeedbackView]:
        check_ms_id(ms_id)
        store = await feedback_store(request)
        rows = await asyncio.to_thread(store.list, ms_id)
        if not rows:
            raise NotFoundError(f"no expression feedback for msId {ms_id!r}; request it at /bqfk")
        return rows

    @r.get("/v1/feedback/{msId}", summary="Expression feedback of every answer of an msId")
    async def feedback(request: Request, msId: MsId) -> Any:
        rows = await _rows(request, msId)
        return {"msId": msId, "answers": [v.to_dict() for v in rows]}

    @r.get(
        "/v1/feedback/{msId}/chart.png",
        summary="Expression timeline chart (PNG)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def chart(
        request: Request,
        msId: MsId,
        index: Annotated[int | None, Query(ge=0, le=1000)] = None,
    ) -> Response:
        rows = await _rows(request, msId)
        if index is not None:
            rows = [v for v in rows if v.index == index]
            if not rows:
                raise NotFoundError(f"no expression feedback for msId {msId!r} index {index}")
        png = await asyncio.to_thread(render_chart, rows)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    return r
