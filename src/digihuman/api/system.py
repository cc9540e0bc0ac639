"""What this server can run: ``GET /v1/engines``.

For each kind (lipsync, tts, asr): the engine names, the default, whether each is available
here (weights present and verified; see :mod:`digihuman.pipeline.availability` for what is
checked and how it stays cheap), for the unavailable ones the missing files and the command
that fetches them, and for lip-sync the per-render options each takes (``/v1/render``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from digihuman.config import Settings
from digihuman.pipeline.availability import Availability


def availability(request: Request) -> Availability:
    """The app's availability checker (made on first use; it keeps what it verified)."""
    state = request.app.state
    found: Availability | None = getattr(state, "availability", None)
    if found is None:
        found = state.availability = Availability(request.app.state.service.settings)
    return found


def system_router(settings: Settings) -> APIRouter:
    r = APIRouter(tags=["v1"])

    @r.get("/v1/engines", summary="Engines by kind: default, available, missing weights, options")
    async def engines(request: Request) -> dict[str, Any]:
        """``{"lipsync": {"default", "engines": [{"name", "default", "available", "detail",
        "options", "missing"?, "fetch"?}]}, "tts": {...}, "asr": {...}}``."""
        checker = availability(request)
        found = await asyncio.to_thread(checker.all)
        return {
            kind: {"default": checker.default(kind), "engines": [e.public() for e in rows]}
            for kind, rows in found.items()
        }

    return r
