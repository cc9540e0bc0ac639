"""Stored expression feedback: one row per answer (``msId``, ``index``).

The API marks it ``queued``; the ``bqfk`` job writes it (``running`` when a worker starts,
then ``done`` with the aggregates and the per-frame timeline, or ``failed`` with the error);
``GET /v1/feedback/{msId}`` reads it. The row's key is the answer, so a job taken over by
another worker after a kill overwrites the same row: the result is stored once. A result is
written only by the job that holds the row (a newer request for the same answer takes it).
Same database as the rooms (:func:`digihuman.rooms.db.open_database`; schema in
``migrations/versions/0002_feedback.py``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from digihuman.errors import InputError

from .models import Base

log = logging.getLogger(__name__)

FEEDBACK_STATUSES = ("queued", "running", "done", "failed")
MS_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""An msId: ASCII letters, digits, '_', '.', '-' (it names rows and chart URLs)."""
MAX_INDEX = 1000


def check_ms_id(ms_id: str) -> str:
    if not MS_ID.match(ms_id or ""):
        raise InputError(
            f"msId {ms_id[:40]!r} is not valid: use 1-128 ASCII letters, digits, '_', '.', '-'"
        )
    return ms_id


def check_index(index: int) -> int:
    if not 0 <= index <= MAX_INDEX:
        raise InputError(f"index {index} is out of range: use 0..{MAX_INDEX}")
    return index


class ExpressionFeedback(Base):
    __tablename__ = "expression_feedback"

    ms_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    job_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(2048))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class FeedbackView:
    ms_id: str
    index: int
    status: str
    job_id: str | None
    source: str | None
    data: dict[str, Any]
    error: str | None
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "msId": self.ms_id,
            "index": self.index,
            "status": self.status,
            "job_id": self.job_id,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            **self.data,
        }


def _view(row: ExpressionFeedback) -> FeedbackView:
    return FeedbackView(
        ms_id=row.ms_id,
        index=row.index,
        status=row.status,
        job_id=row.job_id,
        source=row.source,
        data=dict(row.data or {}),
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class FeedbackStore:
    """Synchronous repository (the API calls it through ``asyncio.to_thread``)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._clock = clock

    def close(self) -> None:
        self.engine.dispose()

    def _put(
        self,
        ms_id: str,
        index: int,
        *,
        status: str,
        job_id: str | None,
        source: str | None = None,
        data: dict[str, Any] | None = None,
        error: str | None = None,
        own: bool = False,
    ) -> FeedbackView | None:
        now = self._clock()
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            row = s.get(ExpressionFeedback, (ms_id, index), with_for_update=True)
            if own and row is not None and row.job_id != job_id:
                log.info(
                    "feedback %s/%d: job %s's result dropped (job %s has the row now)",
                    ms_id,
                    index,
                    job_id,
                    row.job_id,
                )
                return None
            if row is None:
                row = ExpressionFeedback(ms_id=ms_id, index=index, created_at=now, data={})
                s.add(row)
            row.status = status
            row.job_id = job_id
            if source is not None:
                row.source = source
            row.data = data if data is not None else {}
            row.error = error
            row.updated_at = now
            s.flush()
            return _view(row)

    def queue(self, ms_id: str, index: int, *, job_id: str, source: str) -> FeedbackView | None:
        """The API accepted the job (no worker has started it yet)."""
        return self._put(ms_id, index, status="queued", job_id=job_id, source=source)

    def start(
        self, ms_id: str, index: int, *, job_id: str | None, source: str
    ) -> FeedbackView | None:
        """A worker starts ``job_id`` on the answer: it takes the row (a re-analysis replaces
        an earlier result)."""
        return self._put(ms_id, index, status="running", job_id=job_id, source=source)

    def finish(
        self, ms_id: str, index: int, *, job_id: str | None, data: dict[str, Any]
    ) -> FeedbackView | None:
        """Store the result, unless a newer job took the row meanwhile (then None)."""
        return self._put(ms_id, index, status="done", job_id=job_id, data=data, own=True)

    def fail(
        self, ms_id: str, index: int, *, job_id: str | None, error: str
    ) -> FeedbackView | None:
        """Record the failure, unless a newer job took the row meanwhile (then None)."""
        return self._put(ms_id, index, status="failed", job_id=job_id, error=error[:4000], own=True)

    def get(self, ms_id: str, index: int) -> FeedbackView | None:
        with self._sessions() as s:
            row = s.get(ExpressionFeedback, (ms_id, index))
            return None if row is None else _view(row)

    def list(self, ms_id: str) -> list[FeedbackView]:
        with self._sessions() as s:
            rows = s.scalars(
                select(ExpressionFeedback)
                .where(ExpressionFeedback.ms_id == ms_id)
                .order_by(ExpressionFeedback.index)
            ).all()
            return [_view(r) for r in rows]
