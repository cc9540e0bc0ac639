"""Open the rooms database: SQLite under the data root by default, any SQLAlchemy URL otherwise
(``DIGIHUMAN_DATABASE_URL``, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/digihuman``).

:func:`open_database` creates the engine and runs the Alembic migrations to ``head`` (several
processes starting together take a lock first: an advisory lock on PostgreSQL, a file lock
beside an SQLite database).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x6469_6768  # "digh": the advisory lock key for migrations


def default_url(data_dir: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / 'rooms.db'}"


def normalise_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` use psycopg 3 (the driver the service extra ships)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if u.get_backend_name() == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            from digihuman.errors import missing_extra

            raise missing_extra("psycopg", "service") from e
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    backend = engine.url.get_backend_name()
    if backend == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        import fcntl

        lock = Path(str(engine.url.database) + ".migrate.lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    yield


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic, configured in code: no alembic.ini)."""
    try:
        from alembic import command
        from alembic.config import Config
    except ImportError as e:
        from digihuman.errors import missing_extra

        raise missing_extra("alembic", "service") from e
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with _migration_lock(engine), engine.begin() as conn:
        if engine.url.get_backend_name() == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def open_database(url: str) -> Engine:
    """An engine on ``url`` with the schema migrated to the newest revision."""
    engine = make_engine(url)
    migrate(engine)
    log.info("rooms database: %s", engine.url.render_as_string(hide_password=True))
    return engine
