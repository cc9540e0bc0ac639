"""Live rooms on ``stream`` workers: leases, per-room command streams, sessions.

A ``stream`` worker process runs one :class:`LiveHost`, which holds the live sessions
(:class:`~digihuman.pipeline.live.LiveSession`) of several rooms. Redis layout (``P`` is
``RedisSettings.key_prefix``)::

    P live:rooms          hash: zbjname -> JSON spec {"avatar": data-root path} (rooms to keep live)
    P live:lease:<z>      string: the owning host's name, with a TTL of ``live.lease_s``
    P live:cmd:<z>        stream of commands for the room (say, play, interrupt, status, close)
    P live:cursor:<z>     the last command entry its owner handled (a new owner continues there)
    P live:reply:<id>     list: the owner's JSON reply to command <id> (the API BLPOPs it)
    P live:status:<z>     the owner's last status of the room (JSON, short TTL)

One room belongs to one host at a time: a host takes a room with ``SET lease NX PX`` and
renews it three times per lease with a script that checks it is still the owner; a host that
loses its lease (it was stopped too long) closes its session at once. Each host scans
``live:rooms`` on every renewal and takes rooms nobody holds, so the rooms of a dead worker move
to a live one within one lease. The ``stream`` job (enqueued by the API when a room has no
owner) adds the room and lets the worker that took the job claim it first.

Commands: one reader thread ``XREAD``s the command streams of all the host's rooms and hands
each entry to its room's own thread (one per room, a backlog of at most ``_BACKLOG`` entries; a
room whose backlog is full is not read until it drains), so one room's slow work (an audio URL
fetch, a clip load, a WebRTC answer) never delays another room. A room's commands run in stream
order, except ``interrupt`` and ``status``, which the reader answers at once. An interrupt cuts
the current speech, clears the queue and cancels every ``say``/``play`` issued before it that is
not queued yet: a load in flight is abandoned (its thread in the bounded fetch pool finishes or
times out on its own and its result is dropped) and such a command is answered 409. The cursor
``live:cursor:<z>`` is written by the room's thread only, in stream order, after a command is
handled (a fast-path command is recorded there when its turn comes), so a new owner redoes
every command that was read but not finished when the old one died, and skips none.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from digihuman.config import Settings
from digihuman.errors import DigihumanError, InputError, TooLarge
from digihuman.storage import DataRoot

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LiveKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.rooms = f"{prefix}live:rooms"

    def lease(self, z: str) -> str:
        return f"{self.prefix}live:lease:{z}"

    def cmd(self, z: str) -> str:
        return f"{self.prefix}live:cmd:{z}"

    def cursor(self, z: str) -> str:
        return f"{self.prefix}live:cursor:{z}"

    def reply(self, cid: str) -> str:
        return f"{self.prefix}live:reply:{cid}"

    def status(self, z: str) -> str:
        return f"{self.prefix}live:status:{z}"

    def opening(self, z: str) -> str:
        return f"{self.prefix}live:opening:{z}"


def clip_candidates(zbjname: str, audio: str) -> list[str]:
    """The data-root paths where the pre-rendered clip for ``audio`` may be (in order):
    ``tests/<z>_<i>.mp4`` for ``tests/<z>_<i>.wav``, then the seed's ``tests/<z>_<audio>.mp4``
    and ``tests/<audio>.mp4``."""
    name = audio.strip().strip("/")
    stem = name.rsplit("/", 1)[-1]
    for ext in (".wav", ".mp3", ".m4a", ".ogg", ".flac", ".mp4"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    out = []
    if stem.startswith(f"{zbjname}_"):
        out.append(f"tests/{stem}.mp4")
    out += [f"tests/{zbjname}_{stem}.mp4", f"tests/{stem}.mp4"]
    return list(dict.fromkeys(out))


_BACKLOG = 32  # commands read ahead per room (the reader skips a room whose backlog is full)
_FAST = ("interrupt", "status")  # answered by the reader at once, out of the room's order


class _Interrupted(Exception):
    """A ``say``/``play`` issued before an interrupt (or the room closed while it loaded)."""


class _Room:
    def __init__(self, session: Any, cursor: str) -> None:
        self.session = session
        self.cursor = cursor  # the last entry handled (what live:cursor:<z> holds)
        self.read = cursor  # the last entry read from the stream (handed to the room's thread)
        # (entry id, fields, epoch at read time, True when the reader already answered it)
        self.backlog: deque[tuple[str, dict[str, str], int, bool]] = deque()
        self.cond = threading.Condition()
        self.lock = threading.Lock()  # the epoch check and the enqueue into the session, together
        self.epoch = 0  # interrupts so far; a load started in an older epoch is dropped
        self.closed = False


class LiveHost:
    """The live sessions of one worker process."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Any = None,
        name: str | None = None,
    ) -> None:
        from digihuman.jobs.queue import sync_client

        self.settings = settings
        self.cfg = settings.live
        self.keys = LiveKeys(settings.redis.key_prefix)
        self.data_root = DataRoot(settings.data_dir).ensure()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:live"
        self.r = sync_client(settings.redis)
        self.rb = sync_client(settings.redis, socket_timeout=settings.redis.socket_timeout_s + 2)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)
        if engine is None:
            from digihuman.pipeline.engines import create_lipsync

            engine = create_lipsync(settings)
        self.engine = engine
        self.rooms: dict[str, _Room] = {}
        self._prepared: dict[tuple[str, float], Any] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._store: Any = None  # the rooms database, read to close sessions of closed rooms
        self._checked_rooms = 0.0
        # loads (URL fetches, clips) run here so that an interrupt can abandon one in flight
        workers = max(2, self.cfg.rooms_per_worker)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="live-load")

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> LiveHost:
        for target, nm in ((self._manage_loop, "live-manage"), (self._command_loop, "live-cmd")):
            t = threading.Thread(target=target, name=nm, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("live host %s started", self.name)
        return self

    def stop(self) -> None:
        """Close every session and hand the rooms back (their leases are released, so another
        worker takes them at its next scan)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for z in list(self.rooms):
            self._close(z, "worker stopped", forget=False)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()

    # ---- rooms -----------------------------------------------------------------------------
    def add_room(self, zbjname: str, spec: dict[str, Any]) -> None:
        self.r.hset(self.keys.rooms, zbjname, json.dumps(spec))

    def open(self, zbjname: str) -> str | None:
        """Take the room if nobody holds it; the owner's name (None if the room is unknown)."""
        with self._lock:
            if zbjname in self.rooms:
                return self.name
            raw = self.r.hget(self.keys.rooms, zbjname)
            if raw is None:
                return None
            if len(self.rooms) >= self.cfg.rooms_per_worker:
                owner = self.r.get(self.keys.lease(zbjname))
                return str(owner) if owner else None
            lease_ms = int(self.cfg.lease_s * 1000)
            if not self.r.set(self.keys.lease(zbjname), self.name, nx=True, px=lease_ms):
                owner = self.r.get(self.keys.lease(zbjname))
                return str(owner) if owner else None
            try:
                self._open_session(zbjname, json.loads(raw))
            except Exception as exc:
                log.exception("live %s: could not open the session", zbjname)
                self._release(keys=[self.keys.lease(zbjname)], args=[self.name])
                if isinstance(exc, DigihumanError):  # bad avatar: forget the room
                    self.r.hdel(self.keys.rooms, zbjname)
                raise
            return self.name

    def _prepared_for(self, avatar: str) -> Any:
        from digihuman.avatar.prepare import prepare

        path = self.data_root.resolve(avatar, must_exist=True)
        key = (str(path), path.stat().st_mtime)
        if key not in self._prepared:
            fps = float(self.engine.capabilities.fps)
            self._prepared[key] = prepare(self.engine, Path(path), fps=fps)
            while len(self._prepared) > 8:
                self._prepared.pop(next(iter(self._prepared)))
        return self._prepared[key]

    def sinks_for(self, zbjname: str, fps: float) -> list[Any]:
        from digihuman.streaming.sinks import FileSink, HlsSink, LiveEncoder, RtmpSink

        sinks: list[Any] = []
        outputs: list[Any] = []  # containers fed by the room's one H.264 + AAC encoder
        if self.cfg.rtmp_url:
            url = self.cfg.rtmp_url.format(zbjname=zbjname)
            outputs.append(RtmpSink(url, backoff_s=(0.5, self.cfg.rtmp_backoff_max_s)))
        if self.cfg.hls:
            outputs.append(HlsSink(self.data_root.root / "results" / "live" / zbjname / "hls"))
        if self.cfg.record:
            outputs.append(FileSink(self.data_root.root / "results" / "live" / f"{zbjname}.mp4"))
        if outputs:
            sinks.append(LiveEncoder(outputs, fps=fps))
        if self.cfg.whip_url or self.cfg.viewer:
            from digihuman.streaming.webrtc import WebRtcSink

            whip = self.cfg.whip_url.format(zbjname=zbjname) if self.cfg.whip_url else None
            sinks.append(WebRtcSink(fps=fps, whip_url=whip, max_viewers=self.cfg.max_viewers))
        return sinks

    def _open_session(self, zbjname: str, spec: dict[str, Any]) -> None:
        from digihuman.pipeline.live import LiveSession

        prepared = self._prepared_for(str(spec.get("avatar") or "data/portrait.jpg"))
        fps = float(self.engine.capabilities.fps)
        session = LiveSession(
            self.engine,
            prepared,
            sinks=self.sinks_for(zbjname, fps),
            fps=fps,
            name=zbjname,
            max_segment_s=self.cfg.max_segment_s,
            max_queue=self.cfg.max_queue,
        )
        cursor = self.r.get(self.keys.cursor(zbjname)) or "0-0"
        session.start()
        room = _Room(session, str(cursor))
        self.rooms[zbjname] = room
        t = threading.Thread(
            target=self._room_loop, args=(zbjname, room), name=f"live-cmd-{zbjname}", daemon=True
        )
        t.start()
        self._write_status(zbjname)
        log.info("live %s: session opened on %s", zbjname, self.name)

    def _close(self, zbjname: str, reason: str, *, forget: bool) -> None:
        with self._lock:
            room = self.rooms.pop(zbjname, None)
        if room is not None:
            with room.cond:
                room.closed = True  # its thread ends; what it had not handled a new owner redoes
                room.cond.notify_all()
            room.session.stop()
            log.info("live %s: session closed (%s)", zbjname, reason)
        with contextlib.suppress(Exception):  # the lease expires on its own
            pipe = self.r.pipeline(transaction=False)
            if forget:
                pipe.hdel(self.keys.rooms, zbjname)
                pipe.delete(self.keys.status(zbjname))
            pipe.execute()
            self._release(keys=[self.keys.lease(zbjname)], args=[self.name])

    def _write_status(self, zbjname: str) -> None:
        room = self.rooms.get(zbjname)
        if room is None:
            return
        st = room.session.status()
        st.update(owner=self.name, at=time.time())
        ttl = max(2, int(self.cfg.lease_s * 2))
        self.r.set(self.keys.status(zbjname), json.dumps(st), ex=ttl)

    def _manage_loop(self) -> None:
        period = self.cfg.lease_s / 3
        while not self._stop.wait(period):
            try:
                self._manage_once()
            except Exception as exc:  # Redis down: the sessions go on; leases may lapse
                log.warning("live host %s: %s", self.name, exc)

    def _manage_once(self) -> None:
        lease_ms = int(self.cfg.lease_s * 1000)
        for z in list(self.rooms):
            if not self._renew(keys=[self.keys.lease(z)], args=[self.name, lease_ms]):
                self._close(z, "lease lost to another worker", forget=False)
                continue
            room = self.rooms.get(z)
            if room is None:
                continue
            s = room.session
            idle = s.status()["state"] == "idle"
            if idle and time.monotonic() - s.last_activity > self.cfg.idle_timeout_s:
                self._close(z, "idle timeout", forget=True)
                continue
            if not self.r.hexists(self.keys.rooms, z):  # closed by the API
                self._close(z, "room closed", forget=False)
                continue
            self._write_status(z)
        self._close_closed_rooms()
        # rooms nobody holds (new, or their worker died): take them while there is room
        if len(self.rooms) < self.cfg.rooms_per_worker:
            for z in self.r.hkeys(self.keys.rooms):
                if z in self.rooms or self.r.exists(self.keys.lease(z)):
                    continue
                try:
                    self.open(z)
                except Exception as exc:
                    log.warning("live %s: not opened here: %s", z, exc)
                if len(self.rooms) >= self.cfg.rooms_per_worker:
                    break

    def _close_closed_rooms(self, every_s: float = 5.0) -> None:
        """Close the sessions of rooms the database says are closed (or gone)."""
        if not self.rooms or time.monotonic() - self._checked_rooms < every_s:
            return
        self._checked_rooms = time.monotonic()
        try:
            if self._store is None:
                from digihuman.rooms.db import default_url, make_engine
                from digihuman.rooms.store import RoomStore

                url = self.settings.rooms.database_url or default_url(self.data_root.root)
                self._store = RoomStore(make_engine(url))
            for z in list(self.rooms):
                view = self._store.get(z)
                if view is None or view.status == "closed":
                    self._close(z, "the room closed", forget=True)
        except Exception as exc:  # the database is down: the sessions go on
            log.warning("live host %s: could not read the rooms: %s", self.name, exc)

    # ---- commands --------------------------------------------------------------------------
    def _command_loop(self) -> None:
        """The reader: hands each room's entries to its thread (see the module docstring)."""
        while not self._stop.is_set():
            with self._lock:
                streams = {
                    self.keys.cmd(z): room.read
                    for z, room in self.rooms.items()
                    if len(room.backlog) < _BACKLOG
                }
            if not streams:
                self._stop.wait(0.05)
                continue
            try:
                got = self.rb.xread(streams, count=16, block=200)
            except Exception as exc:
                log.warning("live host %s: reading commands: %s", self.name, exc)
                self._stop.wait(0.5)
                continue
            for stream, entries in got or []:
                z = str(stream).rsplit(":", 1)[-1]
                room = self.rooms.get(z)
                if room is None:
                    continue
                for entry_id, fields in entries:
                    room.read = str(entry_id)
                    self._route(z, room, str(entry_id), fields)

    def _route(self, z: str, room: _Room, entry_id: str, fields: dict[str, str]) -> None:
        answered = False
        if fields.get("op") in _FAST:
            reply = self._reply(z, room, fields, room.epoch)
            self._send(z, fields.get("id", ""), reply, None)
            answered = True
        with room.cond:
            room.backlog.append((entry_id, fields, room.epoch, answered))
            room.cond.notify_all()

    def _room_loop(self, z: str, room: _Room) -> None:
        """One room's commands, in stream order; the cursor moves only here."""
        while not self._stop.is_set():
            with room.cond:
                while not room.backlog and not room.closed and not self._stop.is_set():
                    room.cond.wait(0.5)
                if room.closed or self._stop.is_set():
                    return
                entry_id, fields, epoch, answered = room.backlog[0]
            reply = None if answered else self._reply(z, room, fields, epoch)
            with room.cond:
                if room.closed and fields.get("op") != "close":
                    return  # lease lost or stopping: a new owner redoes this one
                if room.backlog:
                    room.backlog.popleft()
            try:
                self._send(z, fields.get("id", ""), reply, entry_id)
            except Exception as exc:  # Redis down: the API times out; a new owner redoes it
                log.warning("live %s: could not record a command: %s", z, exc)
            room.cursor = entry_id

    def _send(self, z: str, cid: str, reply: dict[str, Any] | None, cursor: str | None) -> None:
        pipe = self.r.pipeline(transaction=False)
        if cursor is not None:
            pipe.set(self.keys.cursor(z), cursor, ex=24 * 3600)
        if reply is not None and cid:
            pipe.rpush(self.keys.reply(cid), json.dumps(reply))
            pipe.expire(self.keys.reply(cid), 60)
        pipe.execute()

    def _reply(
        self, z: str, room: _Room, fields: dict[str, str], epoch: int
    ) -> dict[str, Any] | None:
        try:
            age = time.time() - float(fields.get("at", "0"))
            if age > self.cfg.command_max_age_s:
                log.info("live %s: skipped a command %.0f s old", z, age)
                return None
            return self._handle(z, room, fields.get("op", ""), json.loads(fields["args"]), epoch)
        except _Interrupted:
            msg = f"room {z} was interrupted before this was queued; send it again to play it"
            return {"ok": False, "message": msg, "status": 409}
        except DigihumanError as exc:
            return {"ok": False, "message": str(exc), "status": exc.http_status}
        except Exception as exc:
            log.exception("live %s: command failed", z)
            msg = f"internal error ({type(exc).__name__})"
            return {"ok": False, "message": msg, "status": 500}

    def _load(self, room: _Room, epoch: int, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the load pool; abandoned (``_Interrupted``) as soon as an interrupt
        comes after the command or the room closes."""

        def live() -> bool:
            return room.epoch == epoch and not room.closed and not self._stop.is_set()

        if not live():
            raise _Interrupted
        fut = self._pool.submit(fn, *args)
        while True:
            try:
                return fut.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if not live():
                    fut.cancel()
                    raise _Interrupted from None

    def _handle(
        self, z: str, room: _Room, op: str, args: dict[str, Any], epoch: int = 0
    ) -> dict[str, Any] | None:
        s = room.session
        if op == "say":
            source = str(args.get("audio") or "")
            audio = self._load(room, epoch, self._load_audio, source, args.get("cid", ""))
            with room.lock:
                if room.epoch != epoch:
                    raise _Interrupted
                item, seconds = s.say(audio)
            return {
                "ok": True,
                "id": item,
                "seconds": round(seconds, 3),
                "duration": round(len(audio) / 16000, 3),
            }
        if op == "play":
            clip = str(args.get("clip") or "")
            frames, audio = self._load(room, epoch, self._load_clip, clip, s.fps)
            with room.lock:
                if room.epoch != epoch:
                    raise _Interrupted
                item, seconds = s.play(frames, audio)
            return {
                "ok": True,
                "id": item,
                "seconds": round(seconds, 3),
                "duration": round(len(frames) / s.fps, 3),
            }
        if op == "interrupt":
            with room.lock:
                room.epoch += 1
                dropped = s.interrupt()
            self._write_status(z)
            return {"ok": True, "dropped": dropped}
        if op == "status":
            st = s.status()
            st.update(ok=True, owner=self.name)
            return st
        if op == "webrtc":
            rtc = next((k for k in s.sinks if getattr(k, "kind", "") == "webrtc"), None)
            if rtc is None:
                raise InputError("the built-in viewer is off (live.viewer); ask the operator")
            sdp = str(args.get("sdp") or "")
            if "v=0" not in sdp[:200]:
                raise InputError('send the SDP offer as {"sdp": "v=0...", "type": "offer"}')
            return {"ok": True, "sdp": rtc.answer(sdp), "type": "answer"}
        if op == "close":
            self._close(z, "closed by request", forget=True)
            return {"ok": True}
        raise InputError(f"unknown live command {op!r}")

    def _load_audio(self, source: str, cid: str) -> Any:
        from digihuman.jobs.fetch import local_source
        from digihuman.media.audio import load_audio

        api = self.settings.api
        with local_source(
            source,
            self.data_root,
            temp_name=f".fetch-live-{os.getpid()}-{time.monotonic_ns()}",
            allowlist=api.url_allowlist,
            allow_private=api.allow_private_urls,
            max_bytes=api.max_fetch_bytes,
            timeout_s=api.fetch_timeout_s,
        ) as path:
            audio = load_audio(path, max_seconds=api.max_audio_seconds)
        if len(audio) / 16000 > api.max_audio_seconds:
            raise TooLarge(f"audio is longer than the limit of {api.max_audio_seconds} s")
        if len(audio) == 0:
            raise InputError(f"{source}: the audio is empty")
        return audio

    def _load_clip(self, clip: str, fps: float) -> tuple[Any, Any]:
        from digihuman.avatar.prepare import load_source
        from digihuman.media.audio import load_audio

        path = self.data_root.resolve(clip, must_exist=True)
        frames, _ = load_source(Path(path), fps, max_seconds=self.settings.api.max_audio_seconds)
        try:
            audio = load_audio(path, max_seconds=self.settings.api.max_audio_seconds)
        except DigihumanError:
            import numpy as np

            audio = np.zeros(0, np.float32)  # a clip without sound plays silent
        return frames, audio


def make_stream_handler(settings: Settings) -> Any:
    """The ``stream`` job kind: this worker's :class:`LiveHost` (started here, stopped at
    exit) and a handler that opens a room on it: ``{"zbjname": z, "avatar"?: path}`` →
    ``{"zbjname": z, "owner": host name}``. Idempotent: a room already held is left where it is.
    """
    import atexit

    from digihuman.jobs.worker import JobContext

    host = LiveHost(settings).start()
    atexit.register(host.stop)

    def handle(ctx: JobContext) -> dict[str, Any]:
        z = str(ctx.payload.get("zbjname") or "")
        if not z:
            raise InputError("a stream job needs the room's zbjname")
        if not host.r.hexists(host.keys.rooms, z):
            host.add_room(z, {"avatar": str(ctx.payload.get("avatar") or "data/portrait.jpg")})
        return {"zbjname": z, "owner": host.open(z)}

    handle.host = host  # type: ignore[attr-defined]  # for tests and benches in-process
    return handle
