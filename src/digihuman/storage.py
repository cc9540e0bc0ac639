"""The data root and its seed layout; confinement of user-supplied paths.

Layout (the seed system's, under one configurable root)::

    tests/            generated speech and stream material (tests/<uuid>.wav, ...)
    results/output/   rendered videos and frame folders
    results/input/    resampled inputs
    results/avatars/  prepared avatars (one folder per avatar id, with manifest.json)
    models/           weights (official MuseTalk layout)
    data/             samples
    audios/           a library of wav/mp4 assets
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from digihuman.errors import PathOutsideDataRoot

SEED_DIRS = (
    "tests",
    "results/output",
    "results/input",
    "results/avatars",
    "models",
    "data",
    "audios",
)


class DataRoot:
    """The one folder all runtime files live under."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def ensure(self) -> DataRoot:
        for d in SEED_DIRS:
            (self.root / d).mkdir(parents=True, exist_ok=True)
        return self

    # common places
    @property
    def tests(self) -> Path:
        return self.root / "tests"

    @property
    def output(self) -> Path:
        return self.root / "results" / "output"

    @property
    def inputs(self) -> Path:
        return self.root / "results" / "input"

    @property
    def avatars(self) -> Path:
        return self.root / "results" / "avatars"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def resolve(self, user_path: str | os.PathLike[str], *, must_exist: bool = False) -> Path:
        """Resolve a path that came from a user, inside the data root, or refuse it.

        Refused: absolute paths, any ``..`` component, NUL bytes, backslashes, and anything
        that resolves (through symlinks) outside the root.
        """
        raw = os.fspath(user_path)
        if not raw or "\x00" in raw or "\\" in raw:
            raise PathOutsideDataRoot(f"refused path {raw!r}: empty or contains illegal characters")
        pure = PurePosixPath(raw)
        if pure.is_absolute() or raw.startswith("~"):
            raise PathOutsideDataRoot(
                f"refused path {raw!r}: give a path relative to the data root, e.g. tests/x.wav"
            )
        if any(part == ".." for part in pure.parts):
            raise PathOutsideDataRoot(f"refused path {raw!r}: '..' is not allowed")
        candidate = (self.root / pure).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise PathOutsideDataRoot(f"refused path {raw!r}: it leaves the data root")
        if must_exist and not candidate.exists():
            from digihuman.errors import NotFoundError

            raise NotFoundError(f"no such file in the data root: {raw}")
        return candidate

    def relative(self, path: Path) -> str:
        """The data-root-relative POSIX form of a path inside the root."""
        return path.resolve().relative_to(self.root).as_posix()


@contextmanager
def atomic_output(final: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only on success.

    A reader polling for ``final`` never sees a half-written file, and a failure leaves nothing
    that looks like a result.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=suffix or final.suffix or ".tmp", dir=final.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
