"""A versioned on-disk cache of prepared avatars: ``results/avatars/<id>/``.

Each avatar folder holds ``manifest.json`` plus one ``.npy`` file per array (``frames.npy`` and
whatever the engine put in ``PreparedAvatar.arrays``), loaded memory-mapped. The manifest records
the engine, its algorithm version, the settings that shaped the preparation and a fingerprint
of the source file, so that a changed source or setting is detected, never silently reused.
Folders are written beside the target and renamed into place: a crash never leaves a half
avatar that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.engines.base import PreparedAvatar
from digihuman.errors import DigihumanError, InputError, NotFoundError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class StaleAvatarError(DigihumanError):
    """The cached avatar no longer matches its source or the requested settings."""

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
        return self.root / self.check_id(avatar_id)

    def exists(self, avatar_id: str) -> bool:
        return (self.path(avatar_id) / "manifest.json").is_file()

    def list_avatars(self) -> list[AvatarInfo]:
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                m = d / "manifest.json"
                if m.is_file():
                    out.append(AvatarInfo(d.name, d, json.loads(m.read_text())))
        return out

    def manifest(self, avatar_id: str) -> dict[str, Any]:
        m = self.path(avatar_id) / "manifest.json"
        if not m.is_file():
            raise NotFoundError(
                f"no prepared avatar {avatar_id!r}; create it with "
                f"'digihuman avatar prepare --id {avatar_id} --source IMAGE_OR_VIDEO'"
            )
        try:
            data: dict[str, Any] = json.loads(m.read_text())
        except ValueError:
            raise StaleAvatarError(
                f"avatar {avatar_id!r} has a corrupt manifest; prepare it again"
            ) from None
        return data

    def save(self, avatar_id: str, prepared: PreparedAvatar, *, source: Path | None) -> AvatarInfo:
        """Write ``prepared`` atomically (a temp folder renamed over the old one)."""
        final = self.path(avatar_id)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{avatar_id}.", dir=self.root))
        try:
            arrays: dict[str, Any] = {}
            for name, arr in {"frames": prepared.frames, **prepared.arrays}.items():
                if not re.match(r"^[A-Za-z0-9_]+$", name):
                    raise ValueError(f"bad array name {name!r}")
                a = np.ascontiguousarray(arr)
                np.save(tmp / f"{name}.npy", a, allow_pickle=False)
                arrays[name] = {
                    "file": f"{name}.npy",
                    "shape": list(a.shape),
                    "dtype": str(a.dtype),
                }
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
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
            old = None
            if final.exists():
                old = final.with_name(f".{avatar_id}.old-{os.getpid()}-{time.time_ns()}")
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return AvatarInfo(avatar_id, final, manifest)

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
        """Load a prepared avatar (arrays memory-mapped, read-only)."""
        manifest = self.manifest(avatar_id)
        d = self.path(avatar_id)
        arrays = {}
        try:
            for name, spec in manifest["arrays"].items():
                arr = np.load(d / spec["file"], mmap_mode="r", allow_pickle=False)
                if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                    raise ValueError(f"{spec['file']} does not match the manifest")
                arrays[name] = arr
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

    def source_path(self, avatar_id: str) -> Path | None:
        src = self.manifest(avatar_id).get("source")
        return Path(src["path"]) if src else None
