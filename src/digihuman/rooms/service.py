"""Rooms as the API uses them: create a room (with questions), look it up, close idle rooms.

Synchronous (the API runs it in a thread); the question engine is built once, here, from its
settings section.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digihuman.config import QuestionsSettings, RoomsSettings
from digihuman.engines.questions import (
    QuestionEngine,
    create_questions,
    detect_language,
    normalise_language,
)
from digihuman.errors import InputError
from digihuman.storage import DataRoot

from .db import default_url, open_database
from .store import NewQuestion, RoomStore, RoomView

log = logging.getLogger(__name__)

DEFAULT_AVATAR = "data/portrait.jpg"
"""Where the bundled portrait is copied in the data root (the clips' default avatar)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_text(text: str) -> str:
    """User text as stored: control characters (NUL, which PostgreSQL refuses, included) become
    one space, ends trimmed."""
    return _CONTROL.sub(" ", text).strip()


def bundled_portrait() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "portrait.jpg"


@dataclass
class Rooms:
    store: RoomStore
    questions: QuestionEngine
    settings: RoomsSettings
    questions_settings: QuestionsSettings
    data_root: DataRoot

    @classmethod
    def open(
        cls,
        rooms: RoomsSettings,
        questions: QuestionsSettings,
        data_root: DataRoot,
        *,
        engine: QuestionEngine | None = None,
    ) -> Rooms:
        db = open_database(rooms.database_url or default_url(data_root.root))
        return cls(
            store=RoomStore(db),
            questions=engine or create_questions(questions),
            settings=rooms,
            questions_settings=questions,
            data_root=data_root,
        )

    def close(self) -> None:
        self.store.close()

    def avatar(self) -> str:
        """The clips' portrait (a data-root path); the bundled one is copied in when needed."""
        if self.settings.avatar:
            self.data_root.resolve(self.settings.avatar, must_exist=True)
            return self.settings.avatar
        dest = self.data_root.resolve(DEFAULT_AVATAR)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}")
            shutil.copyfile(bundled_portrait(), tmp)
            tmp.replace(dest)
        return DEFAULT_AVATAR

    def create_room(self, username: str) -> RoomView:
        """A room without questions (the seed's ``/create/zbj``: a live room)."""
        return self.store.create(
            owner=clean_text(username) or "?",
            language="zh",
            avatar=self.avatar(),
            timeout_s=self.settings.inactivity_timeout_s,
        )

    def create_interview(
        self,
        username: str,
        job: str,
        count: int,
        *,
        language: str | None = None,
        seed: int | None = None,
    ) -> RoomView:
        """A room with ``count`` questions for ``job`` (language from the title's script unless
        given); its clips are then made by the conductor."""
        job = clean_text(job)
        if not job:
            raise InputError("job is empty: give the position, e.g. job=Java开发工程师")
        limit = self.questions_settings.max_count
        if not 1 <= count <= limit:
            raise InputError(f"count must be between 1 and {limit}, not {count}")
        lang = normalise_language(language) or detect_language(job)
        if seed is None:
            seed = secrets.randbelow(2**31)
        qset = self.questions.generate(job, count, language=lang, seed=seed)
        meta: dict[str, Any] = dict(qset.meta)
        if qset.fallback:
            meta["fallback"] = qset.fallback
        questions = [
            NewQuestion(q.text, q.competency, q.family, q.id, q.suggested_s) for q in qset.questions
        ]
        return self.store.create(
            owner=clean_text(username) or "?",
            job=job,
            families=qset.families,
            language=lang,
            avatar=self.avatar(),
            timeout_s=self.settings.inactivity_timeout_s,
            questions=questions,
            question_engine=qset.engine,
            seed=seed,
            meta=meta,
            clips=self.settings.clips,
        )
