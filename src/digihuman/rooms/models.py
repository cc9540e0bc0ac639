"""The rooms schema (SQLAlchemy 2 declarative). Changes go through a migration in
``migrations/versions/``; ``tests/integration/test_rooms.py`` checks the two agree.

Times are unix seconds (floats), like the job records, so SQLite and PostgreSQL agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUSES = ("created", "ready", "live", "closed")
"""A room's life: created (clips being made) → ready → live (streaming) → closed."""

CLIP_STATUSES = ("pending", "speech", "render", "ready", "failed", "skipped")


class Base(DeclarativeBase):
    pass


class Room(Base):
    __tablename__ = "rooms"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the zbjname
    owner: Mapped[str] = mapped_column(String(256), index=True)
    job: Mapped[str | None] = mapped_column(String(256))
    families: Mapped[list[str]] = mapped_column(JSON, default=list)
    language: Mapped[str] = mapped_column(String(8))
    avatar: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), index=True)
    question_engine: Mapped[str | None] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timeout_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    last_activity_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    closed_at: Mapped[float | None] = mapped_column(Float)
    close_reason: Mapped[str | None] = mapped_column(String(64))

    questions: Mapped[list[RoomQuestion]] = relationship(
        back_populates="room",
        order_by="RoomQuestion.index",
        cascade="all, delete-orphan",
        lazy="selectin",
    )
    answers: Mapped[list[RoomAnswer]] = relationship(
        back_populates="room",
        order_by="RoomAnswer.index",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class RoomQuestion(Base):
    """One question of a room and the state of its spoken clip (TTS → render)."""

    __tablename__ = "room_questions"

    room_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    competency: Mapped[str] = mapped_column(String(32))
    family: Mapped[str] = mapped_column(String(32))
    bank_id: Mapped[str | None] = mapped_column(String(64))
    suggested_s: Mapped[int] = mapped_column(Integer)
    clip_status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    tts_job: Mapped[str | None] = mapped_column(String(128))
    render_job: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[float | None] = mapped_column(Float)  # when the current job was claimed
    audio_path: Mapped[str | None] = mapped_column(String(1024))
    video_path: Mapped[str | None] = mapped_column(String(1024))
    clip_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)

    room: Mapped[Room] = relationship(back_populates="questions")


ANSWER_STATUSES = ("uploaded", "analysing", "done", "failed")
"""An answer: uploaded (its ``answer`` job queued) → analysing → done | failed."""


class RoomAnswer(Base):
    """A candidate's answer to one question: the uploaded media and, once its ``answer`` job
    ran, the transcript, delivery metrics and content evaluation (``data``). A new upload for
    the same question replaces the row; ``job_id`` names the job whose results it takes."""

    __tablename__ = "room_answers"

    room_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    media_path: Mapped[str | None] = mapped_column(String(1024))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    media_type: Mapped[str | None] = mapped_column(String(8))  # audio | video
    content_type: Mapped[str | None] = mapped_column(String(128))
    media_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(128))  # the answer job
    bqfk_job: Mapped[str | None] = mapped_column(String(128))  # expression analysis (video)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    room: Mapped[Room] = relationship(back_populates="answers")
