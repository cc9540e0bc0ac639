"""Alembic migrations of the rooms database, run programmatically by ``rooms.db.migrate``."""
