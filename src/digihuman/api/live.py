"""Live-room routes: the seed's ``/human`` and ``/humanv2``, and ``/v1/rooms/{zbjname}/live``,
``/interrupt``.

The API holds no session: it checks the request, makes sure the room is live (adds it to
``live:rooms`` and enqueues a ``stream`` job when no worker holds it), then sends a command on
the room's command stream and waits (``BLPOP``, bounded) for the owning worker's reply. See
:mod:`digihuman.jobs.live` for the Redis layout.
"""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import asyncio
import contextlib
import json
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from digihuman.api.service import Service
from digihuman.config import Settings
from digihuman.errors import DigihumanError, NotFoundError
from digihuman.jobs.live import LiveKeys, clip_candidates

SHORT = 256
URL_MAX = 2048


class LiveUnavailable(DigihumanError):
    """No ``stream`` worker answered for the room in time."""

    http_status = 503
    retry_after_s = 5.0


class LiveCommandError(DigihumanError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status


class Offer(BaseModel):
    sdp: str = Field(min_length=10, max_length=20_000)
    type: str = Field(default="offer", pattern="^offer$")


VIEW_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>room __ROOM__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{margin:0;background:#111;color:#bbb;font:14px sans-serif;text-align:center}
video{max-width:100%;max-height:92vh;background:#000}</style></head>
<body><video id="v" autoplay playsinline muted controls></video><div id="s">connecting</div>
<script>
// ?mode=auto (default: WebRTC, then HLS after two failures) | webrtc | hls; ?key=<API key>
const room = __ROOM_JSON__, hlsjsHint = __HLSJS_HINT__;
const q = new URLSearchParams(location.search), key = q.get("key");
const mode = ["webrtc", "hls"].includes(q.get("mode")) ? q.get("mode") : "auto";
const kq = key ? `?key=${encodeURIComponent(key)}` : "";
const headers = {"Content-Type": "application/json"};
if (key) headers["X-API-Key"] = key;
const v = document.getElementById("v"), s = document.getElementById("s");
const say = (text) => { s.textContent = text; };
let fails = 0;
function script(src) {
  return new Promise((ok, bad) => {
    const e = document.createElement("script");
    e.src = src; e.onload = ok; e.onerror = bad; document.head.appendChild(e);
  });
}
async function hls() {  // HLS of the same session: hls.js (MediaSource) or the browser's own
  document.body.dataset.mode = "hls";
  const url = `/v1/rooms/${room}/hls/index.m3u8${kq}`;  // the playlist carries ?key on to segments
  try {  // the room's session writes the playlist: make sure it is open
    const r = await fetch(`/v1/rooms/${room}/live`, {method: "POST", headers});
    if (!r.ok) say((await r.json()).message);
  } catch (e) { say(`${e}`); }
  // hls.js over MediaSource where there is one (some Chromium builds claim native HLS that
  // does not play), the browser's own HLS where there is not (iOS Safari)
  if (!window.Hls && window.MediaSource) {
    await script(`/v1/static/hls.min.js${kq}`).catch(() => {});
  }
  if (!window.Hls || !Hls.isSupported()) {
    const hint = window.MediaSource && !window.Hls ? hlsjsHint : "";
    if (!v.canPlayType("application/vnd.apple.mpegurl")) {
      return say(hint || "this browser plays neither WebRTC nor HLS");
    }
    say(`HLS (native) ${hint}`.trim()); v.src = url; v.play().catch(() => {}); return;
  }
  const h = new Hls({  // low latency: start near the live edge, keep little buffer
    liveSyncDurationCount: 2, liveMaxLatencyDurationCount: 5, maxLiveSyncPlaybackRate: 1.5,
    maxBufferLength: 4, backBufferLength: 0, lowLatencyMode: true,
  });
  h.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(() => {}));
  h.on(Hls.Events.ERROR, (_, d) => {
    if (!d.fatal) return;
    say(`HLS: ${d.details}, retrying`);
    if (d.type === Hls.ErrorTypes.MEDIA_ERROR) return h.recoverMediaError();
    h.destroy(); setTimeout(hls, 2000);  // e.g. no playlist yet: the session is starting
  });
  h.loadSource(url); h.attachMedia(v); say("HLS (hls.js)");
}
function failed(pc) {
  pc.close(); fails += 1;
  if (mode === "auto" && fails >= 2) return hls();
  setTimeout(webrtc, 2000);
}
async function webrtc() {
  document.body.dataset.mode = "webrtc";
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const ms = new MediaStream();
  pc.ontrack = (e) => { ms.addTrack(e.track); v.srcObject = ms; };
  pc.onconnectionstatechange = () => {
    say(pc.connectionState);
    if (pc.connectionState === "failed") failed(pc);
  };
  setTimeout(() => pc.connectionState === "connecting" && failed(pc), 15000);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    setTimeout(done, 2000);
  });
  const r = await fetch(`/v1/rooms/${room}/webrtc`, {method: "POST", headers,
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})}).catch((e) => e);
  if (!r.ok) {
    say(r.json ? (await r.json()).message : `${r}`);
    pc.onconnectionstatechange = null; pc.close(); fails += 1;
    if (mode === "auto" && fails >= 2) return hls();
    return setTimeout(webrtc, 5000);
  }
  await pc.setRemoteDescription(await r.json());
}
if (mode === "hls" || (mode === "auto" && !window.RTCPeerConnection)) hls(); else webrtc();
</script></body></html>
"""


def _hlsjs_missing() -> str:
    from digihuman.api import hlsjs

    return (
        f"HLS fallback unavailable: hls.js is not installed on this server ({hlsjs.FILE} not "
        f"in {hlsjs.default_dir()}); {hlsjs.INSTALL_HINT}. WebRTC still works."
    )


class HumanBody(BaseModel):
    zbjname: str = Field(min_length=1, max_length=SHORT)
    audioUrl: str = Field(min_length=1, max_length=URL_MAX)


def _svc(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


async def _room(request: Request, zbjname: str) -> Any:
    store = request.app.state.rooms.rooms.store
    return await asyncio.to_thread(store.require, zbjname, open_=True)


async def _ensure_open(request: Request, settings: Settings, zbjname: str) -> Any:
    """The room (open, touched) with an entry in ``live:rooms`` and, when no worker holds it,
    a ``stream`` job enqueued (once per lease period)."""
    svc = _svc(request)
    room = await _room(request, zbjname)
    lk = LiveKeys(settings.redis.key_prefix)
    await svc.r.hsetnx(lk.rooms, zbjname, json.dumps({"avatar": room.avatar}))
    if not await svc.r.exists(lk.lease(zbjname)):
        ttl = max(2, int(settings.live.lease_s))
        if await svc.r.set(lk.opening(zbjname), "1", nx=True, ex=ttl):
            await svc.enqueue("stream", {"zbjname": zbjname, "avatar": room.avatar})
    store = request.app.state.rooms.rooms.store

    def touch() -> None:
        store.touch(zbjname)
        if room.status in ("created", "ready"):
            store.set_status(zbjname, "live")

    with contextlib.suppress(DigihumanError):  # the room's own state refused: still plays
        await asyncio.to_thread(touch)
    return room


async def _command(
    request: Request,
    settings: Settings,
    zbjname: str,
    op: str,
    args: dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    svc = _svc(request)
    lk = LiveKeys(settings.redis.key_prefix)
    cid = uuid.uuid4().hex
    timeout = settings.live.reply_timeout_s if timeout_s is None else timeout_s
    async with svc.wait_slot():
        await svc.r.xadd(
            lk.cmd(zbjname),
            {"id": cid, "op": op, "args": json.dumps(args or {}), "at": f"{time.time():.3f}"},
            maxlen=200,
            approximate=True,
        )
        got = await svc.rw.blpop([lk.reply(cid)], timeout=max(1, round(timeout)))
    if got is None:
        raise LiveUnavailable(
            f"no stream worker answered for room {zbjname} within {timeout:g} s; is a "
            "`digihuman worker stream` running? (operators: live.reply_timeout_s)"
        )
    reply: dict[str, Any] = json.loads(got[1])
    if not reply.pop("ok", False):
        raise LiveCommandError(str(reply.get("message")), int(reply.get("status") or 500))
    return reply


async def _check_audio(request: Request, audio: str) -> None:
    from digihuman.api.routes import _check_source

    await _check_source(_svc(request), audio)  # a bad path or URL is a 4xx now


def live_router(settings: Settings) -> APIRouter:
    r = APIRouter()
    Name = Annotated[str, Query(min_length=1, max_length=SHORT)]
    Url = Annotated[str, Query(min_length=1, max_length=URL_MAX)]

    async def human_(request: Request, zbjname: str, audio: str) -> dict[str, Any]:
        await _room(request, zbjname)  # an unknown or closed room: 404/409 at once
        await _check_audio(request, audio)  # a missing file or a refused URL: 4xx at once
        await _ensure_open(request, settings, zbjname)
        reply = await _command(request, settings, zbjname, "say", {"audio": audio})
        return {"message": reply["seconds"], "id": reply["id"], "duration": reply["duration"]}

    async def humanv2_(request: Request, zbjname: str, audio: str) -> Any:
        svc = _svc(request)
        await _room(request, zbjname)
        tried = clip_candidates(zbjname, audio)
        clip = None
        for rel in tried:
            try:
                if svc.data_root.resolve(rel).is_file():
                    clip = rel
                    break
            except DigihumanError:
                continue
        if clip is None:
            return JSONResponse(
                {
                    "message": f"no pre-rendered clip for {audio!r}; tried {', '.join(tried)}",
                    "tried": tried,
                },
                status_code=404,
            )
        await _ensure_open(request, settings, zbjname)
        reply = await _command(request, settings, zbjname, "play", {"clip": clip})
        return {"message": reply["seconds"], "id": reply["id"], "clip": clip}

    @r.get("/human", tags=["seed"], summary="Speak audio in the room's live stream (seconds)")
    async def human(request: Request, zbjname: Name, audioUrl: Url) -> Any:
        """``{"message": seconds}``: the audio's duration plus what is queued ahead of it."""
        return await human_(request, zbjname, audioUrl)

    @r.get("/humanv2", tags=["seed"], summary="Play the question's pre-rendered clip (seconds)")
    async def humanv2(request: Request, zbjname: Name, audioUrl: Url) -> Any:
        return await humanv2_(request, zbjname, audioUrl)

    @r.post("/v1/human", tags=["v1"])
    async def v1_human(request: Request, req: Annotated[HumanBody, Body()]) -> Any:
        return await human_(request, req.zbjname, req.audioUrl)

    @r.post("/v1/humanv2", tags=["v1"])
    async def v1_humanv2(request: Request, req: Annotated[HumanBody, Body()]) -> Any:
        return await humanv2_(request, req.zbjname, req.audioUrl)

    @r.post("/v1/rooms/{zbjname}/live", tags=["v1"], summary="Open the room's live stream")
    async def open_live(request: Request, zbjname: str) -> Any:
        await _ensure_open(request, settings, zbjname)
        return await _command(request, settings, zbjname, "status")

    @r.post("/v1/rooms/{zbjname}/interrupt", tags=["v1"], summary="Cut speech, clear the queue")
    async def interrupt(request: Request, zbjname: str) -> Any:
        await _room(request, zbjname)
        lk = LiveKeys(settings.redis.key_prefix)
        if not await _svc(request).r.hexists(lk.rooms, zbjname):
            raise NotFoundError(f"room {zbjname} is not live (open it with /human or POST /live)")
        return await _command(request, settings, zbjname, "interrupt")

    @r.post("/v1/rooms/{zbjname}/webrtc", tags=["v1"], summary="WebRTC offer → answer")
    async def webrtc(request: Request, zbjname: str, offer: Annotated[Offer, Body()]) -> Any:
        """The viewer page's signalling: a receive-only SDP offer in, the room's answer out
        (aiortc in the room's stream worker; ``iceServers=[]``, host candidates)."""
        await _ensure_open(request, settings, zbjname)
        reply = await _command(request, settings, zbjname, "webrtc", {"sdp": offer.sdp})
        return {"sdp": reply["sdp"], "type": reply["type"]}

    @r.get("/v1/rooms/{zbjname}/view", tags=["v1"], summary="Watch the room (WebRTC, HLS)")
    async def view(request: Request, zbjname: str) -> Any:
        """A page that plays the room: WebRTC first, HLS of the same session as the fallback
        (native, or hls.js from ``/v1/static/hls.min.js``); ``?mode=webrtc|hls`` forces one,
        ``?key=`` carries the API key."""
        from fastapi.responses import HTMLResponse

        await _room(request, zbjname)  # a valid, open room: its name is [a-z0-9-] only
        page = VIEW_PAGE.replace("__ROOM_JSON__", json.dumps(zbjname))
        page = page.replace("__HLSJS_HINT__", json.dumps(_hlsjs_missing()))
        return HTMLResponse(page.replace("__ROOM__", zbjname))

    @r.get("/v1/static/hls.min.js", tags=["v1"], summary="hls.js for the viewer's HLS fallback")
    async def hls_js() -> Any:
        """The vendored hls.js (Apache-2.0), placed by ``scripts/install.sh``; 404 when absent."""
        from fastapi.responses import FileResponse

        from digihuman.api import hlsjs

        path = await asyncio.to_thread(hlsjs.installed)
        if path is None:
            raise NotFoundError(_hlsjs_missing())
        return FileResponse(
            path,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @r.get("/v1/rooms/{zbjname}/hls/{name}", tags=["v1"], summary="The room's HLS fallback")
    async def hls(request: Request, zbjname: str, name: str) -> Any:
        """``index.m3u8`` and its ``segNNNNNN.ts`` (1 s each), written by the room's worker
        under ``results/live/<zbjname>/hls/`` (the API and the workers share the data root)."""
        import re

        from fastapi.responses import FileResponse

        await _room(request, zbjname)
        if not re.fullmatch(r"index\.m3u8|seg\d{6}\.ts", name):
            raise NotFoundError(f"no HLS file {name!r} (index.m3u8 or segNNNNNN.ts)")
        path = _svc(request).data_root.root / "results" / "live" / zbjname / "hls" / name
        if not path.is_file():
            raise NotFoundError(f"room {zbjname} has no {name} yet (is it live, with live.hls?)")
        nocache = {"Cache-Control": "no-cache"}
        key = request.query_params.get("key")
        if name.endswith(".m3u8") and key:  # the key goes on to every segment (native players)
            from urllib.parse import quote

            from fastapi.responses import Response

            text = await asyncio.to_thread(path.read_text)
            kq = "?key=" + quote(key, safe="")
            lines = [x if not x or x.startswith("#") else x + kq for x in text.splitlines()]
            return Response(
                "\n".join(lines) + "\n", media_type="application/vnd.apple.mpegurl", headers=nocache
            )
        media = "application/vnd.apple.mpegurl" if name.endswith(".m3u8") else "video/mp2t"
        return FileResponse(path, media_type=media, headers=nocache)

    @r.get("/v1/rooms/{zbjname}/live", tags=["v1"], summary="Idle or speaking, queue, sinks")
    async def live_status(request: Request, zbjname: str) -> Any:
        await _room(request, zbjname)
        svc = _svc(request)
        lk = LiveKeys(settings.redis.key_prefix)
        owner = await svc.r.get(lk.lease(zbjname))
        if owner:
            try:
                st = await _command(request, settings, zbjname, "status", timeout_s=3.0)
                return {"live": True, **st}
            except LiveUnavailable:
                pass
        raw = await svc.r.get(lk.status(zbjname))
        wanted = await svc.r.hexists(lk.rooms, zbjname)
        base = {"live": bool(wanted), "owner": owner, "state": "opening" if wanted else "closed"}
        if raw:
            base.update(json.loads(raw), stale=True)
        return base

    return r
