"""The clip conductor: per question, a TTS job, then a render job, on the existing queue.

Why a conductor in the API process rather than one room-level job: the render job needs the
finished wav (it refuses a missing audio file), and a job that waits for other jobs would hold a
worker thread idle. So the conductor enqueues ``tts`` with the job id ``<zbjname>_<index>``
(the TTS handler names its output by job id: ``tests/<zbjname>_<index>.wav``), waits on the
job's result stream (blocking ``XREAD``, no polling), enqueues ``render`` with that wav and the
room's avatar, and, when the MP4 is done, links it to ``tests/<zbjname>_<index>.mp4``.

Each step is claimed in the database with a conditional UPDATE before it is enqueued, so several
API processes (or a restarted one) drive the same rooms without doing a step twice; a claim
whose job never reached Redis (the process died in between) is enqueued again after
``lost_after_s`` under the same id, which the idempotent handlers tolerate. The loop also closes
idle rooms every ``sweep_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from digihuman.errors import DigihumanError, QueueFull
from digihuman.storage import DataRoot

from .store import QuestionView, RoomStore, RoomView

log = logging.getLogger(__name__)


class Record(Protocol):  # the fields of jobs.queue.JobRecord the conductor reads
    status: str
    progress: float
    result: dict[str, Any] | None
    error: str | None

    @property
    def done(self) -> bool: ...


Enqueue = Callable[[str, dict[str, Any], str], Awaitable[Any]]
Records = Callable[[Sequence[str]], Awaitable[dict[str, Any]]]
WaitAny = Callable[[Sequence[str], float], Awaitable[None]]


def tts_job_id(zbjname: str, index: int) -> str:
    return f"{zbjname}_{index}"


def render_job_id(zbjname: str, index: int) -> str:
    return f"{zbjname}_{index}-render"


def clip_paths(zbjname: str, index: int) -> tuple[str, str]:
    """The data-root paths of a question's wav and mp4."""
    return f"tests/{zbjname}_{index}.wav", f"tests/{zbjname}_{index}.mp4"


def clip_progress(q: QuestionView, rec: Record | None) -> float:
    """0 → 1 over both steps (speech counts 30 %, the render 70 %)."""
    if q.clip_status == "ready":
        return 1.0
    p = float(rec.progress) if rec is not None else 0.0
    if q.clip_status == "speech":
        return round(0.3 * p, 3)
    if q.clip_status == "render":
        return round(0.3 + 0.7 * p, 3)
    return 0.0


def publish(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest`` atomically (a hard link when possible, else a copy)."""
    tmp = dest.with_name(f".{dest.stem}.{secrets.token_hex(4)}{dest.suffix}")
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


class ClipConductor:
    def __init__(
        self,
        store: RoomStore,
        data_root: DataRoot,
        *,
        enqueue: Enqueue,
        records: Records,
        wait_any: WaitAny,
        tick_s: float = 1.0,
        sweep_interval_s: float = 10.0,
        lost_after_s: float = 30.0,
    ) -> None:
        self.store = store
        self.data_root = data_root
        self.enqueue = enqueue
        self.records = records
        self.wait_any = wait_any
        self.tick_s = tick_s
        self.sweep_interval_s = sweep_interval_s
        self.lost_after_s = lost_after_s
        self._stop = asyncio.Event()
        self._last_sweep = 0.0
        self._failing = False

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Until :meth:`stop`: advance every unfinished clip, then wait for a job to end."""
        while not self._stop.is_set():
            waiting: list[str] = []
            try:
                waiting = await self.step()
                await self._sweep()
                if self._failing:
                    log.info("clip conductor: working again")
                    self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not self._failing:  # one line per outage, not one per tick
                    log.warning("clip conductor: %s: %s (retrying)", type(e).__name__, e)
                    self._failing = True
                waiting = []
            try:
                if waiting and not self._failing:
                    await self.wait_any(waiting, self.tick_s)
                else:
                    await asyncio.wait_for(self._stop.wait(), self.tick_s)
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("clip conductor wait: %s", e)
                await asyncio.sleep(self.tick_s)

    async def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval_s:
            self._last_sweep = now
            closed = await asyncio.to_thread(self.store.expire_idle)
            if closed:
                log.info("closed %d idle room(s): %s", len(closed), ", ".join(closed[:10]))

    async def step(self, only: str | None = None) -> list[str]:
        """Advance clips one step where possible; the job ids still running."""
        clips = await asyncio.to_thread(self.store.unfinished_clips, room=only)
        ids = [j for _, q in clips for j in (q.tts_job, q.render_job) if j]
        recs = await self.records(ids) if ids else {}
        waiting: list[str] = []
        touched: set[str] = set()
        for room, q in clips:
            touched.add(room.zbjname)
            try:
                job = await self._advance(room, q, recs)
            except QueueFull as e:  # try again next round (the claim was released)
                log.info("clip conductor: %s", e)
                break
            except (OSError, DigihumanError) as e:  # this clip's own problem (a file, a path)
                await self._fail(room.zbjname, q.index, f"clip failed: {e}")
                continue
            if job:
                waiting.append(job)
        for name in touched:
            await asyncio.to_thread(self.store.mark_ready_if_done, name)
        return waiting

    async def _advance(self, room: RoomView, q: QuestionView, recs: dict[str, Any]) -> str | None:
        name, i = room.zbjname, q.index
        if q.clip_status == "pending":
            return await self._start("tts", room, q, tts_job_id(name, i))
        if q.clip_status not in ("speech", "render"):
            return None
        step, job = ("tts", q.tts_job) if q.clip_status == "speech" else ("render", q.render_job)
        if not job:
            return None
        rec = recs.get(job)
        if rec is None:
            if self._lost(q):
                await self._enqueue(step, room, q, job)
            return job
        if not rec.done:
            return job
        if rec.status != "done":
            await self._fail(name, i, f"{q.clip_status} failed: {rec.error or rec.status}")
            return None
        wav, mp4 = clip_paths(name, i)
        path = str((rec.result or {}).get("path") or "")
        if step == "tts":
            audio = path or wav
            await asyncio.to_thread(self.store.update_clip, name, i, audio_path=audio)
            return await self._start("render", room, q, render_job_id(name, i), audio=audio)
        src = self.data_root.resolve(path)
        dest = self.data_root.resolve(mp4)
        if not dest.exists():
            await asyncio.to_thread(publish, src, dest)
        await asyncio.to_thread(
            self.store.update_clip, name, i, video_path=mp4, clip_status="ready"
        )
        return None

    async def _start(
        self, step: str, room: RoomView, q: QuestionView, job: str, audio: str | None = None
    ) -> str:
        """Claim a step in the database and, when this process won the claim, enqueue it."""
        name, i = room.zbjname, q.index
        if await asyncio.to_thread(self.store.claim, name, i, step=step, job_id=job, expect=None):
            await self._guarded(name, i, self._enqueue(step, room, q, job, audio))
        return job

    async def _guarded(self, name: str, index: int, enqueue: Awaitable[None]) -> None:
        """Enqueue a freshly claimed step; if Redis refuses, the claim is marked lost at once so
        the next round enqueues it again (same job id)."""
        try:
            await enqueue
        except Exception:
            await asyncio.to_thread(self.store.update_clip, name, index, claimed_at=0.0)
            raise

    def _lost(self, q: QuestionView) -> bool:
        return q.claimed_at is not None and self.store.clock() - q.claimed_at > self.lost_after_s

    async def _enqueue(
        self, step: str, room: RoomView, q: QuestionView, job: str, audio: str | None = None
    ) -> None:
        """Enqueue a question's ``tts`` or ``render`` job (again, under the same id, when lost);
        ``audio`` is the wav to render (by default the question's)."""
        wav = clip_paths(room.zbjname, q.index)[0]
        payload: dict[str, Any]
        if step == "tts":
            payload = {"text": q.text, "language": room.language, "voice": None, "output": wav}
        else:
            audio = audio or q.audio_path or wav
            payload = {"source": room.avatar, "audio": audio, "save_frames": False}
        await self.enqueue(step, payload, job)

    async def _fail(self, name: str, index: int, error: str) -> None:
        log.warning("room %s question %d: %s", name, index, error)
        await asyncio.to_thread(
            self.store.update_clip, name, index, clip_status="failed", clip_error=error[:2000]
        )
