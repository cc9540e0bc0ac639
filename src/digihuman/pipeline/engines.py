"""Build engines from settings sections (entrypoints call this; engines never see Settings).

:class:`LipSyncCache` holds the lip-sync engines a render worker has built, one per engine name
and per-render options (``/v1/render``'s ``engine`` and ``bbox_shift``), so that a second render
with the same choice reuses the loaded weights.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from digihuman.config import Settings
from digihuman.engines.base import LIPSYNC, LipSyncEngine

ENGINE_CACHE_SIZE = 4
"""Lip-sync engines a render worker keeps built (least recently used out first). MuseTalk
engines that differ only in ``bbox_shift`` share one set of loaded models."""


def lipsync_kwargs(settings: Settings, name: str) -> dict[str, Any]:
    ls = settings.lipsync
    if name == "musetalk":
        mt = settings.musetalk
        return {
            "models_dir": settings.models_dir,
            "version": mt.version,
            "device": mt.device,
            "dtype": mt.dtype,
            "batch_size": mt.batch_size,
            "bbox_shift": mt.bbox_shift,
            "extra_margin": mt.extra_margin,
            "parsing_mode": mt.parsing_mode,
            "compile": mt.compile,
            "seed": mt.seed,
            "silence_db": mt.silence_db,
            "blend_workers": mt.blend_workers,
            "face_index": ls.face_index,
        }
    if name == "lite":
        return {"fps": ls.fps, "face_index": ls.face_index, "blink": ls.blink}
    return {"fps": ls.fps}


def lipsync_options(settings: Settings, name: str) -> tuple[str, ...]:
    """The per-render options engine ``name`` applies (fields of ``/v1/render``).

    ``bbox_shift`` moves the upper edge of MuseTalk v1.0's mask; v1.5 ignores it (the official
    v1.5 uses 0), and so do the lite and fake engines."""
    if name == "musetalk" and settings.musetalk.version == "v1":
        return ("bbox_shift",)
    return ()


def render_options(
    settings: Settings, name: str, *, bbox_shift: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The options a render with engine ``name`` applies (requested or from the settings) and
    the requested ones it ignores (the engine has no such option)."""
    takes = lipsync_options(settings, name)
    applied: dict[str, Any] = {}
    ignored: list[str] = []
    if "bbox_shift" in takes:
        applied["bbox_shift"] = settings.musetalk.bbox_shift if bbox_shift is None else bbox_shift
    elif bbox_shift is not None:
        ignored.append("bbox_shift")
    return applied, ignored


def create_lipsync(settings: Settings, name: str | None = None, **overrides: Any) -> LipSyncEngine:
    """The lip-sync engine named (default: ``settings.lipsync.engine``), built from settings;
    ``overrides`` replace keyword arguments (per-render options, shared ``components``)."""
    name = name or settings.lipsync.engine
    return LIPSYNC.create(name, **{**lipsync_kwargs(settings, name), **overrides})


class LipSyncCache:
    """Built lip-sync engines by (name, applied options), bounded, safe across threads."""

    def __init__(self, settings: Settings, size: int = ENGINE_CACHE_SIZE) -> None:
        self.settings = settings
        self.size = max(1, size)
        self._engines: OrderedDict[tuple[str, tuple[tuple[str, Any], ...]], LipSyncEngine] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.built = 0  # engines constructed (tests and logs: a cache hit builds none)

    def get(
        self, name: str | None = None, *, bbox_shift: int | None = None
    ) -> tuple[LipSyncEngine, dict[str, Any], list[str]]:
        """The engine for this render, the options it applies and the requested ones it
        ignores (see :func:`render_options`)."""
        name = name or self.settings.lipsync.engine
        applied, ignored = render_options(self.settings, name, bbox_shift=bbox_shift)
        key = (name, tuple(sorted(applied.items())))
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine, applied, ignored
            sibling = next((e for (n, _), e in reversed(self._engines.items()) if n == name), None)
        extra: dict[str, Any] = {}
        if name == "musetalk" and sibling is not None:
            # the same models with another mask: share the sibling's loaded components
            extra["components"] = sibling.load()  # type: ignore[attr-defined]  # MuseTalkEngine
        engine = create_lipsync(self.settings, name, **applied, **extra)
        with self._lock:
            engine = self._engines.setdefault(key, engine)  # a racing thread's engine wins
            self._engines.move_to_end(key)
            self.built += 1
            while len(self._engines) > self.size:
                self._engines.popitem(last=False)
        return engine, applied, ignored
