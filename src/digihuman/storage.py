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
import secrets
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
    that looks like a result. The temporary file is named ``.<stem>.<8 random chars><suffix>``
    and created with mode ``0o666`` minus the umask, exactly as ``open(final, "w")`` would be
    (``mkstemp``'s 0600 would make outputs on a shared data root unreadable to other users).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_exclusive(final.parent, f".{final.stem}.", suffix or final.suffix or ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _random_name(prefix: str, suffix: str = "") -> str:
    return f"{prefix}{secrets.token_hex(4)}{suffix}"


def _create_exclusive(folder: Path, prefix: str, suffix: str) -> Path:
    """Create a new empty file ``folder/<prefix><random><suffix>`` (mode 0o666 & ~umask)."""
    for _ in range(100):
        path = folder / _random_name(prefix, suffix)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"cannot create a temporary file in {folder}")  # pragma: no cover


def make_unique_dir(folder: Path, prefix: str) -> Path:
    """Create a new folder ``folder/<prefix><random>`` with mode 0o777 & ~umask (what
    ``mkdir`` gives; ``tempfile.mkdtemp`` would make it 0700)."""
    for _ in range(100):
        path = folder / _random_name(prefix)
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"cannot create a temporary folder in {folder}")  # pragma: no cover
