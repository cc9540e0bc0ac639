"""Shared input checks for the media readers."""

from __future__ import annotations

import os
from pathlib import Path

from digihuman.errors import InputError, NotFoundError


def existing_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a :class:`Path` when it is a readable, non-empty regular file.

    ``what`` names the kind of input in the message ("audio file", "image", ...).
    """
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"{what} {p} not found; check the path")
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder, not a file; give the path of a file")
    if p.stat().st_size == 0:
        raise InputError(f"{what} {p.name} is empty (0 bytes); give a complete file")
    return p
