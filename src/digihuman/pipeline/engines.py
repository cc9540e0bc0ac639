"""Build engines from settings sections (entrypoints call this; engines never see Settings)."""

from __future__ import annotations

from typing import Any

from digihuman.config import Settings
from digihuman.engines.base import LIPSYNC, LipSyncEngine


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


def create_lipsync(settings: Settings, name: str | None = None) -> LipSyncEngine:
    """The lip-sync engine named (default: ``settings.lipsync.engine``), built from settings."""
    name = name or settings.lipsync.engine
    return LIPSYNC.create(name, **lipsync_kwargs(settings, name))
