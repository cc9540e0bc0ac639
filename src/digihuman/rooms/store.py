"""The rooms repository: synchronous SQLAlchemy sessions in, frozen views out.

The API calls it through ``asyncio.to_thread``. Every method is one short transaction; the
clip steps are claimed with a conditional UPDATE (``... WHERE tts_job IS NULL``), so several API
processes can drive the same rooms without doing a step twice.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from digihuman.errors import DigihumanError, InputError, NotFoundError

from .models import STATUSES, Room, RoomAnswer, RoomQuestion

ZBJNAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""A room id: lower-case ASCII letters, digits and '-' (safe in URLs, file names, RTMP keys)."""

_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: readable when spoken or typed
_TRANSITIONS = {
    "created": {"ready", "live", "closed"},
    "ready": {"live", "closed"},
    "live": {"ready", "closed"},
    "closed": set(),
}


class RoomClosed(DigihumanError):
    """The room exists but has closed (idle too long, or closed on purpose)."""

    http_status = 410


def slugify(username: str, max_len: int = 24) -> str:
    """The username part of a zbjname: ASCII letters and digits (Chinese as pinyin when pypinyin
    is installed), lower case, runs of anything else as one '-'."""
    text = unicodedata.normalize("NFKC", username)
    if re.search(r"[\u4e00-\u9fff]", text):
        try:
            from pypinyin import lazy_pinyin

            text = "-".join(lazy_pinyin(text))
        except ImportError:
            pass
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:max_len].strip("-")
    return slug or "room"


def new_zbjname(username: str) -> str:
    """``<slug>-<10 random characters>`` (50 bits): unguessable, and safe everywhere."""
    return f"{slugify(username)}-{''.join(secrets.choice(_ALPHABET) for _ in range(10))}"


def check_zbjname(zbjname: str) -> str:
    if not ZBJNAME.match(zbjname):
        raise NotFoundError(f"no room {zbjname!r} (room names are lower-case letters, digits, -)")
    return zbjname


@dataclass(frozen=True)
class QuestionView:
    index: int
    text: str
    competency: str
    family: str
    bank_id: str | None
    suggested_s: int
    clip_status: str
    tts_job: str | None
    render_job: str | None
    claimed_at: float | None
    audio_path: str | None
    video_path: str | None
    clip_error: str | None


@dataclass(frozen=True)
class AnswerView:
    index: int
    status: str
    media_path: str | None
    data: dict[str, Any]
    media_type: str | None = None
    content_type: str | None = None
    media_bytes: int | None = None
    duration_s: float | None = None
    job_id: str | None = None
    bqfk_job: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


def _answer_view(a: RoomAnswer) -> AnswerView:
    return AnswerView(
        a.index,
        a.status,
        a.media_path,
        dict(a.data or {}),
        a.media_type,
        a.content_type,
        a.media_bytes,
        a.duration_s,
        a.job_id,
        a.bqfk_job,
        a.error,
        a.created_at,
        a.updated_at,
    )


@dataclass(frozen=True)
class RoomView:
    zbjname: str
    owner: str
    job: str | None
    families: tuple[str, ...]
    language: str
    avatar: str
    status: str
    question_engine: str | None
    seed: int | None
    meta: dict[str, Any]
    timeout_s: float
    created_at: float
    updated_at: float
    last_activity_at: float
    expires_at: float
    closed_at: float | None
    close_reason: str | None
    questions: tuple[QuestionView, ...]
    answers: tuple[AnswerView, ...]


@dataclass(frozen=True)
class NewQuestion:
    text: str
    competency: str = "other"
    family: str = "general"
    bank_id: str | None = None
    suggested_s: int = 90


def _view(room: Room) -> RoomView:
    return RoomView(
        zbjname=room.id,
        owner=room.owner,
        job=room.job,
        families=tuple(room.families or ()),
        language=room.language,
        avatar=room.avatar,
        status=room.status,
        question_engine=room.question_engine,
        seed=room.seed,
        meta=dict(room.meta or {}),
        timeout_s=room.timeout_s,
        created_at=room.created_at,
        updated_at=room.updated_at,
        last_activity_at=room.last_activity_at,
        expires_at=room.expires_at,
        closed_at=room.closed_at,
        close_reason=room.close_reason,
        questions=tuple(
            QuestionView(
                q.index,
                q.text,
                q.competency,
                q.family,
                q.bank_id,
                q.suggested_s,
                q.clip_status,
                q.tts_job,
                q.render_job,
                q.claimed_at,
                q.audio_path,
                q.video_path,
                q.clip_error,
            )
            for q in room.questions
        ),
        answers=tuple(_answer_view(a) for a in room.answers),
    )


class RoomStore:
    """Rooms, their questions and clip states. ``clock`` is injectable for expiry tests."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._session = sessionmaker(engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------------------------------
    # rooms

    def create(
        self,
        *,
        owner: str,
        language: str,
        avatar: str,
        timeout_s: float,
        job: str | None = None,
        families: Sequence[str] = (),
        questions: Sequence[NewQuestion] = (),
        question_engine: str | None = None,
        seed: int | None = None,
        meta: dict[str, Any] | None = None,
        clips: bool = True,
    ) -> RoomView:
        """A new room with a fresh zbjname (retried on the rare collision). With ``clips`` its
        questions wait for their clips (status created); without, it is ready at once."""
        now = self.clock()
        for _ in range(8):
            zbjname = new_zbjname(owner)
            room = Room(
                id=zbjname,
                owner=owner,
                job=job,
                families=list(families),
                language=language,
                avatar=avatar,
                status="created" if questions and clips else "ready",
                question_engine=question_engine,
                seed=seed,
                meta=dict(meta or {}),
                timeout_s=float(timeout_s),
                created_at=now,
                updated_at=now,
                last_activity_at=now,
                expires_at=now + float(timeout_s),
            )
            room.questions = [
                RoomQuestion(
                    index=i,
                    text=q.text,
                    competency=q.competency,
                    family=q.family,
                    bank_id=q.bank_id,
                    suggested_s=q.suggested_s,
                    clip_status="pending" if clips else "skipped",
                    updated_at=now,
                )
                for i, q in enumerate(questions)
            ]
            try:
                with self._session.begin() as s:
                    s.add(room)
                    s.flush()
                    return _view(room)
            except IntegrityError:
                continue
        raise RuntimeError("could not find a free room name after 8 tries")  # pragma: no cover

    def get(self, zbjname: str) -> RoomView | None:
        """The room as it is now; a room past its inactivity deadline is closed first."""
        with self._session.begin() as s:
            room = s.get(Room, zbjname)
            if room is None:
                return None
            self._expire_one(room, self.clock())
            return _view(room)

    def require(self, zbjname: str, *, open_: bool = False) -> RoomView:
        check_zbjname(zbjname)
        view = self.get(zbjname)
        if view is None:
            raise NotFoundError(f"no room {zbjname!r} (create one with /create/zbj)")
        if open_ and view.status == "closed":
            raise RoomClosed(
                f"room {zbjname} is closed ({view.close_reason or 'closed'}); create a new one"
            )
        return view

    def touch(self, zbjname: str) -> RoomView:
        """Record activity: the inactivity deadline moves to now + the room's timeout."""
        with self._session.begin() as s:
            room = s.get(Room, zbjname)
            if room is None:
                raise NotFoundError(f"no room {zbjname!r}")
            now = self.clock()
            if not self._expire_one(room, now):
                room.last_activity_at = now
                room.expires_at = now + room.timeout_s
                room.updated_at = now
            return _view(room)

    def set_status(self, zbjname: str, status: str, *, reason: str | None = None) -> RoomView:
        if status not in STATUSES:
            raise InputError(f"unknown room status {status!r}; one of {', '.join(STATUSES)}")
        with self._session.begin() as s:
            room = s.get(Room, zbjname, with_for_update=True)
            if room is None:
                raise NotFoundError(f"no room {zbjname!r}")
            now = self.clock()
            self._expire_one(room, now)
            if room.status != status:
                if status not in _TRANSITIONS[room.status]:
                    raise InputError(f"room {zbjname} is {room.status}; it cannot become {status}")
                room.status = status
                room.updated_at = now
                if status == "closed":
                    room.closed_at = now
                    room.close_reason = reason or "closed"
            return _view(room)

    def close_room(self, zbjname: str, reason: str = "closed") -> RoomView:
        return self.set_status(zbjname, "closed", reason=reason)

    def expire_idle(self) -> list[str]:
        """Close every open room whose inactivity deadline has passed; their names."""
        now = self.clock()
        with self._session.begin() as s:
            names = list(
                s.scalars(
                    select(Room.id).where(and_(Room.status != "closed", Room.expires_at < now))
                )
            )
            if names:
                s.execute(
                    update(Room)
                    .where(and_(Room.id.in_(names), Room.status != "closed"))
                    .values(status="closed", closed_at=now, updated_at=now, close_reason="idle")
                )
        return names

    @staticmethod
    def _expire_one(room: Room, now: float) -> bool:
        if room.status != "closed" and room.expires_at < now:
            room.status = "closed"
            room.closed_at = now
            room.updated_at = now
            room.close_reason = "idle"
        return room.status == "closed"

    # ---------------------------------------------------------------------------------------
    # clips

    def unfinished_clips(
        self, limit: int = 500, *, room: str | None = None
    ) -> list[tuple[RoomView, QuestionView]]:
        """Clips still to make (pending / speech / render) of rooms that are not closed (of one
        room when ``room`` is given), oldest rooms first."""
        cond = and_(
            Room.status != "closed",
            RoomQuestion.clip_status.in_(("pending", "speech", "render")),
        )
        if room is not None:
            cond = and_(cond, Room.id == room)
        with self._session.begin() as s:
            rows = s.execute(
                select(Room.id, RoomQuestion.index)
                .join(RoomQuestion, RoomQuestion.room_id == Room.id)
                .where(cond)
                .order_by(Room.created_at, RoomQuestion.index)
                .limit(limit)
            ).all()
            out: list[tuple[RoomView, QuestionView]] = []
            cache: dict[str, RoomView] = {}
            for rid, idx in rows:
                if rid not in cache:
                    row = s.get(Room, rid)
                    if row is None:  # pragma: no cover - deleted meanwhile
                        continue
                    cache[rid] = _view(row)
                view = cache[rid]
                out.append((view, view.questions[idx]))
            return out

    def claim(
        self, zbjname: str, index: int, *, step: str, job_id: str, expect: str | None
    ) -> bool:
        """Set the clip's ``step`` job (``tts`` or ``render``) to ``job_id`` if it is still
        ``expect`` (None: unclaimed); True when this caller won the claim."""
        col = RoomQuestion.tts_job if step == "tts" else RoomQuestion.render_job
        status = "speech" if step == "tts" else "render"
        now = self.clock()
        with self._session.begin() as s:
            res = s.execute(
                update(RoomQuestion)
                .where(
                    and_(
                        RoomQuestion.room_id == zbjname,
                        RoomQuestion.index == index,
                        col.is_(None) if expect is None else col == expect,
                    )
                )
                .values({col: job_id, "clip_status": status, "claimed_at": now, "updated_at": now})
                .execution_options(synchronize_session=False)
            )
            return int(res.rowcount or 0) == 1  # type: ignore[attr-defined]  # CursorResult

    def update_clip(self, zbjname: str, index: int, **values: Any) -> None:
        """Set clip fields (clip_status, audio_path, video_path, clip_error, claimed_at)."""
        allowed = {"clip_status", "audio_path", "video_path", "clip_error", "claimed_at"}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"not clip fields: {sorted(bad)}")
        with self._session.begin() as s:
            s.execute(
                update(RoomQuestion)
                .where(and_(RoomQuestion.room_id == zbjname, RoomQuestion.index == index))
                .values(updated_at=self.clock(), **values)
                .execution_options(synchronize_session=False)
            )

    def mark_ready_if_done(self, zbjname: str) -> bool:
        """created → ready once no clip is left to make (failed clips count as done)."""
        with self._session.begin() as s:
            room = s.get(Room, zbjname, with_for_update=True)
            if room is None or room.status != "created":
                return False
            if any(q.clip_status in ("pending", "speech", "render") for q in room.questions):
                return False
            room.status = "ready"
            room.updated_at = self.clock()
            return True

    # ---------------------------------------------------------------------------------------
    # answers

    def put_answer(
        self,
        zbjname: str,
        index: int,
        *,
        media_path: str,
        media_type: str,
        content_type: str | None,
        media_bytes: int,
        duration_s: float | None,
        job_id: str,
        bqfk_job: str | None = None,
    ) -> tuple[AnswerView, str | None]:
        """Store a new upload for question ``index`` (replacing an earlier answer to it) and
        count it as activity; (the answer, the replaced answer's media path or None).

        The room must be open and have that question (RoomClosed / NotFoundError otherwise)."""
        with self._session.begin() as s:
            room = s.get(Room, zbjname, with_for_update=True)  # serialises uploads per room
            if room is None:
                raise NotFoundError(f"no room {zbjname!r} (create one with /create/zbjv2)")
            now = self.clock()
            if self._expire_one(room, now):
                raise RoomClosed(
                    f"room {zbjname} is closed ({room.close_reason or 'closed'}); create a new one"
                )
            if not any(q.index == index for q in room.questions):
                raise NotFoundError(
                    f"room {zbjname} has no question {index} (it has {len(room.questions)})"
                )
            room.last_activity_at = now
            room.expires_at = now + room.timeout_s
            room.updated_at = now
            row = s.get(RoomAnswer, (zbjname, index), with_for_update=True)
            old = None
            if row is None:
                row = RoomAnswer(room_id=zbjname, index=index, created_at=now)
                s.add(row)
            else:
                old = row.media_path
            row.status = "uploaded"
            row.media_path = media_path
            row.media_type = media_type
            row.content_type = content_type
            row.media_bytes = int(media_bytes)
            row.duration_s = duration_s
            row.job_id = job_id
            row.bqfk_job = bqfk_job
            row.data = {}
            row.error = None
            row.updated_at = now
            s.flush()
            return _answer_view(row), (old if old != media_path else None)

    def get_answer(self, zbjname: str, index: int) -> AnswerView | None:
        with self._session.begin() as s:
            row = s.get(RoomAnswer, (zbjname, index))
            return None if row is None else _answer_view(row)

    def update_answer(
        self,
        zbjname: str,
        index: int,
        *,
        job_id: str,
        status: str,
        data: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Record the ``answer`` job's progress or outcome, only while ``job_id`` is still the
        answer's job (a newer upload's results are never overwritten by an older job); True
        when written."""
        values: dict[str, Any] = {"status": status, "updated_at": self.clock(), "error": error}
        if data is not None:
            values["data"] = data
        with self._session.begin() as s:
            res = s.execute(
                update(RoomAnswer)
                .where(
                    and_(
                        RoomAnswer.room_id == zbjname,
                        RoomAnswer.index == index,
                        RoomAnswer.job_id == job_id,
                    )
                )
                .values(values)
                .execution_options(synchronize_session=False)
            )
            return int(res.rowcount or 0) == 1  # type: ignore[attr-defined]  # CursorResult

    def session(self) -> Session:
        """A raw session (the answers and feedback features add their own queries)."""
        return self._session()
