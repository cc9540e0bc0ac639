"""Prepare an avatar from an image, a folder of images or a video, and cache it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.avatar.store import AvatarStore, StaleAvatarError
from digihuman.engines.base import LipSyncEngine, PreparedAvatar, Progress, no_progress
from digihuman.errors import InputError, NoFaceError, NotFoundError

log = logging.getLogger(__name__)

MAX_SOURCE_SECONDS = 120.0


def resample_frames(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Pick the source frame shown at each output frame time (nearest earlier frame)."""
    n = len(frames)
    if n <= 1 or abs(src_fps - dst_fps) < 1e-3 or src_fps <= 0:
        return frames
    duration = n / src_fps
    n_out = max(1, round(duration * dst_fps))
    idx = np.minimum((np.arange(n_out) * src_fps / dst_fps + 1e-6).astype(np.int64), n - 1)
    return frames[idx]


def load_source(source: Path, fps: float) -> tuple[np.ndarray, str]:
    """Read a source into frames at ``fps`` (a still gives one frame)."""
    from digihuman.media.video import read_source

    if not source.exists():
        raise NotFoundError(f"avatar source not found: {source}")
    frames, src_fps, kind = read_source(source)
    if kind == "video":
        limit = int(MAX_SOURCE_SECONDS * src_fps)
        if len(frames) > limit:
            log.warning("video avatar longer than %.0f s: using the first part", MAX_SOURCE_SECONDS)
            frames = frames[:limit]
        frames = resample_frames(frames, src_fps, fps)
    if len(frames) == 0:
        raise InputError(f"{source.name} contains no frames; give an image or a video")
    return frames, kind


def fingerprint(engine: LipSyncEngine, fps: float) -> dict[str, Any]:
    return {"engine": engine.name, "fps": fps, **engine.settings_fingerprint()}


def prepare(
    engine: LipSyncEngine, source: Path, *, fps: float, progress: Progress = no_progress
) -> PreparedAvatar:
    """Read ``source`` and run the engine's one-time preparation on it."""
    frames, kind = load_source(source, fps)
    try:
        prepared = engine.prepare(frames, fps, progress=progress)
    except NoFaceError as exc:  # name the file the user gave
        raise NoFaceError(f"{source.name}: {exc}") from None
    prepared.meta = {
        **prepared.meta,
        "fingerprint": fingerprint(engine, fps),
        "source_kind": kind,
    }
    return prepared


def prepare_and_store(
    store: AvatarStore,
    avatar_id: str,
    engine: LipSyncEngine,
    source: Path,
    *,
    fps: float,
    progress: Progress = no_progress,
) -> PreparedAvatar:
    store.check_id(avatar_id)
    prepared = prepare(engine, source, fps=fps, progress=progress)
    store.save(avatar_id, prepared, source=source)
    return store.load(avatar_id)


def load_or_refresh(
    store: AvatarStore,
    avatar_id: str,
    engine: LipSyncEngine,
    *,
    fps: float,
    progress: Progress = no_progress,
) -> tuple[PreparedAvatar, list[str]]:
    """Load a cached avatar; re-prepare it from its recorded source when it is stale.

    Returns the avatar and the reasons it was refreshed (empty when the cache was fresh).
    A stale avatar whose source is gone raises :class:`StaleAvatarError`.
    """
    manifest = store.manifest(avatar_id)
    reasons = store.staleness(
        manifest, engine=engine.name, meta={"fingerprint": fingerprint(engine, fps)}
    )
    if not reasons:
        return store.load(avatar_id), []
    source = store.source_path(avatar_id)
    if source is None or not source.exists():
        raise StaleAvatarError(
            f"avatar {avatar_id!r} is stale ({'; '.join(reasons)}) and its source is gone; "
            f"prepare it again with 'digihuman avatar prepare --id {avatar_id} --source ...'"
        )
    log.warning("avatar %s is stale (%s): preparing it again", avatar_id, "; ".join(reasons))
    return prepare_and_store(store, avatar_id, engine, source, fps=fps, progress=progress), reasons


def obtain(
    store: AvatarStore,
    engine: LipSyncEngine,
    *,
    source: Path | None,
    avatar_id: str | None,
    fps: float,
    progress: Progress = no_progress,
) -> tuple[PreparedAvatar, list[str]]:
    """The prepared avatar a render asks for, and why it was re-prepared (if it was).

    * ``avatar_id`` alone: the cached avatar, refreshed from its recorded source when stale;
    * ``source`` and ``avatar_id``: prepare ``source`` and store it under ``avatar_id``;
    * ``source`` alone: prepare it in memory, nothing cached.
    """
    if source is None and avatar_id is None:
        raise InputError("give an avatar source (image or video) or a prepared avatar id")
    if source is None:
        assert avatar_id is not None
        return load_or_refresh(store, avatar_id, engine, fps=fps, progress=progress)
    if avatar_id is not None:
        return prepare_and_store(store, avatar_id, engine, source, fps=fps, progress=progress), []
    return prepare(engine, source, fps=fps, progress=progress), []
