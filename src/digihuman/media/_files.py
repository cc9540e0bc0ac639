"""Shared input checks for the media readers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success.

    A failed write leaves nothing behind that could pass for a result.
    """
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dst.stem}.", suffix=f".part{dst.suffix}", dir=dst.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
