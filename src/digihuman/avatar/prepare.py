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
"""A video (or a folder of images, at 25 fps) longer than this is cut here."""
MAX_SOURCE_BYTES = 2 << 30
"""Decoded RGB frames a source may take (2 GiB: ~31 s of 720p or ~14 s of 1080p at 25 fps);
a source past it is cut there. Together with MAX_SOURCE_SECONDS this bounds the memory of a
preparation by construction: decoding stops at the bound, whatever the file declares."""


def resample_frames(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Pick the source frame shown at each output frame time (nearest earlier frame)."""
    n = len(frames)
    if n <= 1 or abs(src_fps - dst_fps) < 1e-3 or src_fps <= 0:
        return frames
    duration = n / src_fps
    n_out = max(1, round(duration * dst_fps))
    idx = np.minimum((np.arange(n_out) * src_fps / dst_fps + 1e-6).astype(np.int64), n - 1)
    return frames[idx]


def load_source(
    source: Path,
    fps: float,
    *,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> tuple[np.ndarray, str]:
    """Read a source into frames at ``fps`` (a still gives one frame).

    A video is decoded frame by frame straight into its frames at ``fps`` and decoding stops
    at ``max_seconds`` (default :data:`MAX_SOURCE_SECONDS`) or when the frames fill
    ``max_bytes`` (default :data:`MAX_SOURCE_BYTES`), with a warning: a tiny file of many
    large frames cannot expand past the bound.
    """
    from digihuman.media.video import read_source, source_kind

    if not source.exists():
        raise NotFoundError(f"avatar source not found: {source}")
    max_seconds = MAX_SOURCE_SECONDS if max_seconds is None else max_seconds
    max_bytes = MAX_SOURCE_BYTES if max_bytes is None else max_bytes
    kind = source_kind(source)
    if kind == "video":
        frames = _video_at_fps(source, fps, max_seconds=max_seconds, max_bytes=max_bytes)
    else:
        frames, _, kind = read_source(source, max_seconds=max_seconds, max_bytes=max_bytes)
    if len(frames) == 0:
        raise InputError(f"{source.name} contains no frames; give an image or a video")
    return frames, kind


def _video_at_fps(source: Path, fps: float, *, max_seconds: float, max_bytes: int) -> np.ndarray:
    """The frames of a video at ``fps`` (what :func:`resample_frames` gives), decoded one by
    one into one bounded buffer: no whole-video array, no second copy for the resampling."""
    from digihuman.media.video import FrameStack, iter_video, video_fps, why_full

    src_fps = video_fps(source)
    step = 1.0 if abs(src_fps - fps) < 1e-3 else src_fps / fps  # source frames per output
    max_src = max(1, int(max_seconds * src_fps))
    stack = FrameStack(max_frames=max(1, round(max_src / step)) + 1, max_bytes=max_bytes)
    n_src = 0  # source frames consumed
    k = 0  # output frames written
    last: np.ndarray | None = None
    full = False
    for img in iter_video(source, max_frames=max_src + 1, max_frame_bytes=max_bytes):
        if n_src == max_src:
            log.warning("video avatar longer than %.0f s: using the first part", max_seconds)
            break
        # the output frames that show this source frame (nearest earlier source frame)
        while int(k * step + 1e-6) <= n_src:
            if not stack.add(img):
                full = True
                break
            k += 1
        if full:
            log.warning(
                "%s: using the first %.1f s: %s", source.name, k / fps, why_full(stack, img.nbytes)
            )
            break
        n_src += 1
        last = img
    if not full and last is not None:
        n_out = n_src if n_src <= 1 or step == 1.0 else max(1, round(n_src / step))
        stack.truncate(n_out)
        while stack.n < n_out and stack.add(last):  # the tail shows the last source frame
            pass
    return stack.array()


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
