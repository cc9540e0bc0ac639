"""A versioned on-disk cache of prepared avatars: ``results/avatars/<id>``.

Each version of an avatar is a folder holding ``manifest.json`` plus one ``.npy`` file per array
(``frames.npy`` and whatever the engine put in ``PreparedAvatar.arrays``), loaded memory-mapped.
The manifest records the engine, its algorithm version, the settings that shaped the preparation
and a fingerprint of the source file, so that a changed source or setting is detected, never
silently reused.

Layout and concurrency (several workers and CLI runs may save and load one id at once)::

    alice -> .alice@3f9c01d2      a symlink: the current version (switched with one rename)
    .alice@3f9c01d2/              manifest.json, frames.npy, ...
    .alice.lock                   flock()ed by a save, across processes

A save takes the id's lock, writes a new version folder beside the others, points the symlink at
it (``rename`` of a new link over the old one: atomic) and removes the previous version. A save
that fails or is killed never touches the current version, so the old avatar stays loadable;
what a killed save leaves is swept by the next save of that id (or :meth:`AvatarStore.sweep`).
A reader takes no lock: it resolves the link once and reads that version; when a save removed
it meanwhile it reads the new one (a version's files never change once it is current, and arrays
already mapped stay valid after their files are removed). ``@`` cannot occur in an id, so one
id's versions never match another id's names. :meth:`AvatarStore.delete` takes the lock too,
unlinks ``<id>`` (readers see no avatar from then on) and removes the versions. A plain folder
at ``<id>`` (the layout before versions) is still read, and moved aside and replaced on the
next save (restored if that fails).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from digihuman.engines.base import PreparedAvatar
from digihuman.errors import DigihumanError, InputError, NotFoundError
from digihuman.storage import make_unique_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# what the store itself leaves beside the avatars: ".<id>@<version>" (also the temporary link
# ".<id>@link-<random>" and a moved-aside pre-version folder ".<id>@legacy-<random>")
_VERSION_RE = re.compile(r"^\.([A-Za-z0-9][A-Za-z0-9._-]{0,63})@")
# what the store before versions left behind: ".<id>.old-<pid>-<ns>" and mkdtemp ".<id>.<8>"
_OLD_LEFTOVER = r"^\.{id}\.(?:old-\d+-\d+|[a-z0-9_]{{8}})$"

SAVE_LOCK_TIMEOUT_S = 600.0
"""How long a save waits for another save of the same id before giving up."""
DELETE_LOCK_TIMEOUT_S = 30.0
"""How long a delete waits for a save of the same id (then :class:`AvatarBusyError`)."""
READ_WAIT_S = 60.0
"""How long a load of a missing avatar waits for a save of that id in progress."""
_READ_RETRIES = 10

T = TypeVar("T")


class StaleAvatarError(DigihumanError):
    """The cached avatar no longer matches its source or the requested settings."""

    http_status = 409


class AvatarBusyError(DigihumanError):
    """Another process holds the avatar's lock for too long."""

    http_status = 409


def source_fingerprint(path: Path) -> dict[str, Any]:
    """Content hash (sha256) and size of a source file or folder of images."""
    h = hashlib.sha256()
    size = 0
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode() if path.is_dir() else b"")
        with f.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):  # type: ignore[misc]
                h.update(block)
                size += len(block)
    return {"sha256": h.hexdigest(), "bytes": size}


@dataclass(frozen=True)
class AvatarInfo:
    avatar_id: str
    path: Path
    manifest: dict[str, Any]


class AvatarStore:
    """Prepared avatars under one folder (``<data root>/results/avatars``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def check_id(avatar_id: str) -> str:
        if not _ID_RE.match(avatar_id or ""):
            raise InputError(
                f"invalid avatar id {avatar_id!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        return avatar_id

    def path(self, avatar_id: str) -> Path:
        """The avatar's name in the store (a symlink to its current version)."""
        return self.root / self.check_id(avatar_id)

    def exists(self, avatar_id: str) -> bool:
        try:
            self.manifest(avatar_id)
        except (NotFoundError, StaleAvatarError):
            return False
        return True

    def list_avatars(self) -> list[AvatarInfo]:
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if not _ID_RE.match(d.name):
                    continue  # versions, locks, temporaries
                try:
                    out.append(AvatarInfo(d.name, d, self.manifest(d.name)))
                except (NotFoundError, StaleAvatarError):
                    continue
        return out

    # ------------------------------------------------------------------ reading

    def _current(self, avatar_id: str) -> Path | None:
        """The folder of the current version (a pre-version plain folder counts), or None."""
        link = self.path(avatar_id)
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a symlink: a plain folder (or file)
                return link if link.is_dir() else None
            raise
        return self.root / target

    def _read(self, avatar_id: str, read: Callable[[Path], T]) -> T:
        """``read(folder)`` on the current version; read again when a save replaced it
        meanwhile (FileNotFoundError with another version current). Missing: wait for a save
        of this id in progress, then NotFoundError."""
        waited = False
        last: FileNotFoundError | None = None
        for _ in range(_READ_RETRIES):
            folder = self._current(avatar_id)
            if folder is None:
                if waited or not self._wait_for_save(avatar_id):
                    break
                waited = True
                continue
            try:
                return read(folder)
            except FileNotFoundError as exc:
                last = exc
                if self._current(avatar_id) == folder:
                    break  # not a save in between: the version itself lacks the file
        missing_manifest = last is not None and str(last.filename).endswith("manifest.json")
        if last is not None and not missing_manifest and self._current(avatar_id) is not None:
            raise StaleAvatarError(
                f"avatar {avatar_id!r} is damaged ({last.filename} is missing); prepare it "
                f"again with 'digihuman avatar prepare --id {avatar_id} --source ...'"
            )
        raise NotFoundError(
            f"no prepared avatar {avatar_id!r}; create it with "
            f"'digihuman avatar prepare --id {avatar_id} --source IMAGE_OR_VIDEO'"
        )

    def _wait_for_save(self, avatar_id: str) -> bool:
        """Wait until no save of ``avatar_id`` holds its lock; False when none ever ran."""
        with self._locked(avatar_id, shared=True, timeout=READ_WAIT_S) as had_lock:
            return had_lock

    def manifest(self, avatar_id: str) -> dict[str, Any]:
        return self._read(avatar_id, lambda d: _read_manifest(avatar_id, d))

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _locked(
        self, avatar_id: str, *, shared: bool = False, timeout: float = SAVE_LOCK_TIMEOUT_S
    ) -> Iterator[bool]:
        """Hold the id's lock (``.<id>.lock``, flock: works across processes and threads).

        A shared (reader) lock never creates the lock file: with none there, it yields False.
        """
        lock = self.root / f".{self.check_id(avatar_id)}.lock"
        try:
            if shared:
                fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
            else:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:  # no lock file (never saved), or not ours to open: no save to wait for
            if not shared:
                raise
            yield False
            return
        try:
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            deadline = time.monotonic() + timeout
            pause = 0.005
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AvatarBusyError(
                            f"avatar {avatar_id!r} has been locked by another save for over "
                            f"{timeout:.0f} s; try again when it finishes"
                        ) from None
                    time.sleep(pause * (0.5 + random.random()))  # jitter: no lockstep
                    pause = min(pause * 2, 0.05)
            yield True
        finally:
            os.close(fd)  # releases the lock

    def save(self, avatar_id: str, prepared: PreparedAvatar, *, source: Path | None) -> AvatarInfo:
        """Write ``prepared`` as a new version and make it current (atomically).

        Saves of one id run one at a time (the id's lock); readers see the old version until
        the switch and the new one after it. On any failure the old version stays current.
        """
        final = self.path(avatar_id)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(avatar_id):
            self._sweep_locked(avatar_id)
            version = make_unique_dir(self.root, f".{avatar_id}@")
            try:
                manifest = _write_version(version, avatar_id, prepared, source)
                previous = self._switch(avatar_id, version)
            except BaseException:
                shutil.rmtree(version, ignore_errors=True)
                raise
            if previous is not None:
                _remove(previous)
        return AvatarInfo(avatar_id, final, manifest)

    def delete(self, avatar_id: str, *, timeout: float = DELETE_LOCK_TIMEOUT_S) -> None:
        """Remove the avatar: its link first (one ``unlink``: from then on readers see no
        avatar), then every version folder of the id. Holds the id's lock, so a save running
        meanwhile finishes before (and is deleted) or starts after (and is complete); a reader
        that already mapped a version's arrays keeps reading them (the files stay until the
        last mapping goes). The source the avatar was prepared from is left alone, and so is
        the lock file (removing it would let a waiting save and a later one lock different
        files). Unknown id: :class:`NotFoundError`."""
        link = self.path(avatar_id)
        if not os.path.lexists(link):  # (a first save still running counts as after this)
            raise NotFoundError(f"no prepared avatar {avatar_id!r}")
        with self._locked(avatar_id, timeout=timeout):
            current = self._current(avatar_id)
            if current is None:  # another delete was first
                raise NotFoundError(f"no prepared avatar {avatar_id!r}")
            if current == link:  # a plain folder from before versions: out of sight first
                aside = self.root / f".{avatar_id}@legacy-{os.urandom(4).hex()}"
                os.rename(link, aside)
            else:
                os.unlink(link)
            self._sweep_locked(avatar_id)  # the versions (none is current any more)
        log.info("avatar %s deleted", avatar_id)

    def _switch(self, avatar_id: str, version: Path) -> Path | None:
        """Point ``<id>`` at ``version`` with one rename; the previous version's folder."""
        link = self.path(avatar_id)
        previous = self._current(avatar_id)
        tmp_link = self.root / f".{avatar_id}@link-{version.name.rsplit('@', 1)[1]}"
        os.symlink(version.name, tmp_link)
        aside: Path | None = None
        try:
            if previous == link:  # a plain folder from before versions: move it aside first
                aside = self.root / f".{avatar_id}@legacy-{version.name.rsplit('@', 1)[1]}"
                os.rename(link, aside)
                previous = aside
            os.replace(tmp_link, link)
        except BaseException:
            tmp_link.unlink(missing_ok=True)
            if aside is not None and not os.path.lexists(link):
                os.rename(aside, link)  # restore the old version
            raise
        return previous

    def _sweep_locked(self, avatar_id: str) -> int:
        """Remove what killed saves of ``avatar_id`` left (caller holds the id's lock)."""
        current = self._current(avatar_id)
        old = re.compile(_OLD_LEFTOVER.format(id=re.escape(avatar_id)))
        removed = 0
        for entry in list(self.root.iterdir()):
            m = _VERSION_RE.match(entry.name)
            mine = (m is not None and m.group(1) == avatar_id) or old.match(entry.name)
            if mine and entry != current:
                _remove(entry)
                removed += 1
        return removed

    def sweep(self) -> int:
        """Remove leftovers of killed saves for every id not being saved right now (a
        worker may call this at start). Returns how many entries were removed."""
        if not self.root.is_dir():
            return 0
        ids = set()
        for entry in self.root.iterdir():
            m = _VERSION_RE.match(entry.name) or re.match(r"^\.(.+)\.old-\d+-\d+$", entry.name)
            if m and _ID_RE.match(m.group(1)):
                ids.add(m.group(1))
        removed = 0
        for avatar_id in sorted(ids):
            try:
                with self._locked(avatar_id, timeout=0.0):
                    removed += self._sweep_locked(avatar_id)
            except AvatarBusyError:
                continue  # a save is running: it sweeps for itself
        return removed

    def staleness(
        self,
        manifest: dict[str, Any],
        *,
        engine: str,
        meta: dict[str, Any],
        check_source: bool = True,
    ) -> list[str]:
        """Reasons the cached avatar does not match; empty when it is fresh."""
        reasons = []
        if manifest.get("format") != FORMAT_VERSION:
            reasons.append(f"cache format {manifest.get('format')} != {FORMAT_VERSION}")
        if manifest.get("engine") != engine:
            reasons.append(f"prepared for engine {manifest.get('engine')!r}, not {engine!r}")
        cached_meta = manifest.get("meta", {})
        for key, value in meta.items():
            if cached_meta.get(key) != value:
                reasons.append(f"{key} changed ({cached_meta.get(key)!r} -> {value!r})")
        src = manifest.get("source")
        if check_source and src:
            p = Path(src["path"])
            if p.exists() and source_fingerprint(p)["sha256"] != src.get("sha256"):
                reasons.append(f"source {p} changed since preparation")
        return reasons

    def load(self, avatar_id: str) -> PreparedAvatar:
        """Load a prepared avatar (arrays memory-mapped, read-only): one whole version, the
        old or the new one when a save runs meanwhile."""
        return self._read(avatar_id, lambda d: _load_version(avatar_id, d))

    def source_path(self, avatar_id: str) -> Path | None:
        src = self.manifest(avatar_id).get("source")
        return Path(src["path"]) if src else None


def _read_manifest(avatar_id: str, folder: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    except ValueError:
        raise StaleAvatarError(
            f"avatar {avatar_id!r} has a corrupt manifest; prepare it again"
        ) from None
    return data


def _load_version(avatar_id: str, folder: Path) -> PreparedAvatar:
    manifest = _read_manifest(avatar_id, folder)
    arrays = {}
    try:
        for name, spec in manifest["arrays"].items():
            arr = np.load(folder / spec["file"], mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                raise ValueError(f"{spec['file']} does not match the manifest")
            arrays[name] = arr
    except FileNotFoundError:
        raise  # maybe removed by a save meanwhile: the caller reads the new version
    except (OSError, ValueError, KeyError) as exc:
        raise StaleAvatarError(
            f"avatar {avatar_id!r} is damaged ({exc}); prepare it again with "
            f"'digihuman avatar prepare --id {avatar_id} --source ...'"
        ) from None
    frames = arrays.pop("frames")
    return PreparedAvatar(
        engine=manifest["engine"],
        fps=float(manifest["fps"]),
        frames=frames,
        arrays=arrays,
        meta=manifest.get("meta", {}),
    )


def _write_version(
    folder: Path, avatar_id: str, prepared: PreparedAvatar, source: Path | None
) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for name, arr in {"frames": prepared.frames, **prepared.arrays}.items():
        if not re.match(r"^[A-Za-z0-9_]+$", name):
            raise ValueError(f"bad array name {name!r}")
        a = np.ascontiguousarray(arr)
        np.save(folder / f"{name}.npy", a, allow_pickle=False)
        arrays[name] = {"file": f"{name}.npy", "shape": list(a.shape), "dtype": str(a.dtype)}
    manifest = {
        "format": FORMAT_VERSION,
        "avatar_id": avatar_id,
        "engine": prepared.engine,
        "fps": prepared.fps,
        "n_frames": prepared.n_frames,
        "width": prepared.size[0],
        "height": prepared.size[1],
        "meta": prepared.meta,
        "source": (
            {"path": str(source.resolve()), **source_fingerprint(source)}
            if source is not None
            else None
        ),
        "arrays": arrays,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:  # the next save of this id sweeps it
        log.warning("could not remove %s: %s", path, exc)
