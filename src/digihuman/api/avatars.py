"""Uploads and prepared avatars: ``POST /v1/uploads``, ``GET /v1/avatars``,
``DELETE /v1/avatars/{avatar_id}``.

The demo page (``digihuman web``) holds no files of its own: what a visitor uploads goes to the
API here and comes back as a data-root path, which ``/v1/render`` and the rooms take.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from typing import Any

from fastapi import APIRouter, Query, Request

from digihuman.config import Settings
from digihuman.errors import DigihumanError, InputError, TooLarge

UPLOAD_PATH = r"/v1/uploads"
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
IMAGE_VIDEO_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".mp4", ".mov", ".webm", ".mkv")
UPLOAD_EXTS = frozenset((*IMAGE_VIDEO_EXTS, ".wav", ".mp3", ".m4a", ".aac", ".ogg", ".flac"))
_NAME_RE = re.compile(r"^[^/\\\x00]{1,200}$")


class BadAvatarId(DigihumanError):
    """An avatar id the store cannot hold (see ``AvatarStore.check_id``)."""

    http_status = 400


def avatars_router(settings: Settings) -> APIRouter:
    r = APIRouter(tags=["v1"])

    @r.post("/v1/uploads", status_code=201, summary="Store an upload; answers its data-root path")
    async def upload(
        request: Request, name: str = Query(min_length=1, max_length=200)
    ) -> dict[str, Any]:
        """The raw body (any content type) is written to ``tests/uploads/<random><ext>``; the
        extension of ``name`` must be an image, video or audio one."""
        svc = request.app.state.service
        ext = os.path.splitext(name)[1].lower()
        if not _NAME_RE.match(name) or ext not in UPLOAD_EXTS:
            raise InputError(f"refused upload {name!r}: use one of {' '.join(sorted(UPLOAD_EXTS))}")
        folder = svc.data_root.tests / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        rel = f"tests/uploads/{secrets.token_hex(8)}{ext}"
        dest = svc.data_root.root / rel
        tmp = dest.with_name(dest.name + ".part")
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise TooLarge(f"upload over {MAX_UPLOAD_BYTES >> 20} MB")
                    f.write(chunk)
            if size == 0:
                raise InputError("empty upload")
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return {"path": rel, "bytes": size}

    @r.get("/v1/avatars", summary="Prepared avatars")
    async def avatars(request: Request) -> dict[str, Any]:
        from digihuman.avatar.store import AvatarStore

        svc = request.app.state.service
        store = AvatarStore(svc.data_root.avatars)
        out = []
        for a in store.list_avatars():
            src = store.source_path(a.avatar_id)
            rel = None
            if src is not None:
                with contextlib.suppress(ValueError):
                    rel = str(src.resolve().relative_to(svc.data_root.root.resolve()))
            out.append({"id": a.avatar_id, "source": rel, "manifest": a.manifest})
        return {"avatars": out}

    @r.delete("/v1/avatars/{avatar_id}", summary="Delete a prepared avatar")
    async def delete_avatar(request: Request, avatar_id: str) -> dict[str, Any]:
        """Remove the prepared avatar (its cached frames and arrays); the upload it was
        prepared from stays. 404 for an unknown id, 400 for an invalid one, 409 while a save
        of the same id holds it for over 30 s."""
        from digihuman.avatar.store import AvatarStore

        svc = request.app.state.service
        store = AvatarStore(svc.data_root.avatars)
        try:
            store.check_id(avatar_id)
        except InputError as exc:
            raise BadAvatarId(str(exc)) from None
        await asyncio.to_thread(store.delete, avatar_id)  # may wait for a save of this id
        return {"deleted": avatar_id}

    return r
