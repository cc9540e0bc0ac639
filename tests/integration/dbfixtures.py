"""A fresh rooms database for a test: SQLite in a folder, or PostgreSQL created and dropped.

PostgreSQL is the machine's server at 127.0.0.1:5432 (trust auth); each call creates its own
database and drops it afterwards, so tests never share state. Skips when none is reachable.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


def database_url(kind: str, folder: Path) -> Iterator[str]:
    """Yield one database URL of ``kind`` (sqlite | postgresql); clean up when resumed."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'rooms.db'}"
        return
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {e}")
    name = f"digihuman_test_{secrets.token_hex(5)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
