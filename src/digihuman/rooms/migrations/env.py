"""Alembic environment: run from code (``digihuman.rooms.db.migrate``), no alembic.ini.

The caller puts an open SQLAlchemy connection in ``config.attributes["connection"]``; without
one (the ``alembic`` CLI pointed here), ``sqlalchemy.url`` from the config is used.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from digihuman.rooms import feedback as _feedback  # noqa: F401  # registers its table on Base
from digihuman.rooms.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]  # a sqlalchemy Connection
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite: ALTER via table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
    else:
        engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
        with engine.begin() as c:
            _run(c)
        engine.dispose()
