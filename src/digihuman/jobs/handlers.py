"""Job handlers, one per job kind; each factory loads its engine once per worker.

A handler takes a :class:`~digihuman.jobs.worker.JobContext` and returns a JSON-able dict. It
must be idempotent (delivery is at-least-once): its output is named by the job id and written by
atomic rename, and an output that already exists is returned as is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.config import Settings
from digihuman.errors import DigihumanError, InputError, TooLarge
from digihuman.jobs.answers import make_answer
from digihuman.jobs.fetch import local_source
from digihuman.jobs.worker import Handler, JobContext
from digihuman.media.audio import save_wav
from digihuman.storage import DataRoot, atomic_output

log = logging.getLogger(__name__)

KINDS = ("tts", "asr", "bqfk", "render", "stream", "answer")
"""The job kinds a worker can serve (``debug`` is a diagnostic kind for tests and benches)."""


class ArrivesLater(DigihumanError):
    """A feature routed here whose behaviour is delivered by a later issue."""

    http_status = 501


def _clean_stale(final: Path) -> None:
    """Remove temp files a killed attempt left beside ``final`` (``.<stem>.*``)."""
    for p in final.parent.glob(f".{final.stem}.*"):
        try:
            if time.time() - p.stat().st_mtime > 1.0:
                p.unlink(missing_ok=True)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# TTS
# --------------------------------------------------------------------------------------------


def _create_tts(settings: Settings) -> Any:
    from digihuman.engines.tts import create_tts

    return create_tts(settings.tts)


def tts_output(data_root: DataRoot, job_id: str) -> Path:
    return data_root.tests / f"{job_id}.wav"


def make_tts(settings: Settings) -> Handler:
    engine = _create_tts(settings)
    max_chars = settings.tts.max_chars

    def handle(ctx: JobContext) -> dict[str, Any]:
        text = str(ctx.payload.get("text") or "").strip()
        if not text:
            raise InputError("nothing to say: the text is empty")
        if len(text) > max_chars:
            raise TooLarge(f"text is {len(text)} characters; the limit is {max_chars}")
        final = tts_output(ctx.data_root, ctx.job_id)
        rel = ctx.data_root.relative(final)
        if final.exists():  # a previous attempt finished the file
            return {"path": rel}
        _clean_stale(final)
        ctx.progress(0.05, "synthesizing")
        parts: list[np.ndarray] = []
        rate = int(engine.capabilities.sample_rate)
        for chunk in engine.synthesize(
            text, voice=ctx.payload.get("voice"), language=ctx.payload.get("language")
        ):
            rate = int(chunk.sample_rate)
            parts.append(np.asarray(chunk.samples, dtype=np.float32))
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        save_wav(final, audio, rate)  # atomic: a polling client never sees half a file
        return {"path": rel, "duration": round(len(audio) / rate, 3), "sample_rate": rate}

    return handle


# --------------------------------------------------------------------------------------------
# ASR
# --------------------------------------------------------------------------------------------


def _create_asr(settings: Settings) -> Any:
    from digihuman.engines.asr import create_asr

    return create_asr(settings.asr)


def make_asr(settings: Settings) -> Handler:
    engine = _create_asr(settings)
    api = settings.api

    def handle(ctx: JobContext) -> dict[str, Any]:
        from digihuman.media.audio import load_audio

        source = str(ctx.payload.get("source") or "")
        with local_source(
            source,  # any scheme, any case: fetched or refused as a URL
            ctx.data_root,
            temp_name=f".fetch-{ctx.job_id}",
            allowlist=api.url_allowlist,
            allow_private=api.allow_private_urls,
            max_bytes=api.max_fetch_bytes,
            timeout_s=api.fetch_timeout_s,
        ) as path:
            ctx.progress(0.1, "decoding audio")
            audio = load_audio(path, max_seconds=api.max_audio_seconds)  # stops at the limit
        seconds = len(audio) / 16000.0
        if seconds > api.max_audio_seconds:
            raise TooLarge(f"audio is {seconds:.0f} s long; the limit is {api.max_audio_seconds} s")
        ctx.progress(0.2, "transcribing")
        tr = engine.transcribe(audio, language=ctx.payload.get("language"))
        return {"text": tr.text, "language": tr.language, "duration": round(seconds, 3)}

    return handle


# --------------------------------------------------------------------------------------------
# later issues
# --------------------------------------------------------------------------------------------


def make_bqfk(settings: Settings) -> Handler:
    """Expression feedback on one answer video: sample, measure, aggregate, store the result
    under (msId, index) in the rooms database (``running`` → ``done`` | ``failed``).

    A job taken over after its worker died runs again from the start and overwrites the same
    row: the stored result appears once. A corrupt or truncated video fails the job with the
    reason, recorded in the job and in the row."""
    from digihuman.engines.expression import (
        analysis_options,
        analyze_video,
        create_expression,
        create_summary,
    )
    from digihuman.rooms.db import default_url, open_database
    from digihuman.rooms.feedback import FeedbackStore, check_index, check_ms_id

    engine = create_expression(settings.expression)
    options = analysis_options(settings.expression)
    summariser = create_summary(settings.expression, settings.questions)
    api = settings.api
    store = FeedbackStore(
        open_database(settings.rooms.database_url or default_url(settings.data_dir))
    )

    def handle(ctx: JobContext) -> dict[str, Any]:
        ms_id = check_ms_id(str(ctx.payload.get("msId") or ""))
        index = check_index(int(ctx.payload.get("index") or 0))
        source = str(ctx.payload.get("source") or "")
        if not source:
            raise InputError("no video given: the url is empty")
        store.start(ms_id, index, job_id=ctx.job_id, source=source)
        frames: list[np.ndarray] | None = [] if summariser is not None else None
        try:
            with local_source(
                source,
                ctx.data_root,
                temp_name=f".fetch-{ctx.job_id}",
                allowlist=api.url_allowlist,
                allow_private=api.allow_private_urls,
                max_bytes=api.max_fetch_bytes,
                timeout_s=api.fetch_timeout_s,
                on_fetch=lambda: ctx.progress(0.02, "downloading the video"),
            ) as path:
                ctx.progress(0.05, "analysing expressions")
                summary = analyze_video(
                    engine,
                    path,
                    options=options,
                    progress=ctx.progress,
                    keep_frames=frames,
                    keep=settings.expression.summary_frames,
                )
        except DigihumanError as exc:
            store.fail(ms_id, index, job_id=ctx.job_id, error=str(exc))
            raise
        except Exception as exc:  # retried by the worker (a later attempt rewrites the row)
            err = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            store.fail(ms_id, index, job_id=ctx.job_id, error=f"attempt {ctx.attempt}: {err}")
            raise
        if summariser is not None and summary["face_visible"] > 0:
            ctx.progress(0.96, "writing the summary")
            lang = str(ctx.payload.get("language") or "en")
            summary["llm_summary"] = summariser.summarize(
                summary, frames or [], language="zh" if lang.startswith("zh") else "en"
            )
        store.finish(ms_id, index, job_id=ctx.job_id, data=summary)
        out = {k: v for k, v in summary.items() if k not in ("timeline", "options")}
        return {"msId": ms_id, "index": index, **out}

    return handle


def make_stream(settings: Settings) -> Handler:
    """Live rooms: this worker holds rooms' live sessions (see :mod:`digihuman.jobs.live`)."""
    from digihuman.jobs.live import make_stream_handler

    handler: Handler = make_stream_handler(settings)
    return handler


def make_render(settings: Settings) -> Handler:
    """Offline render jobs: a data-root portrait/video + a data-root speech file → an MP4.

    Payload: ``{"source": "data/me.jpg", "audio": "tests/<id>.wav", "avatar_id"?: str,
    "save_frames"?: bool, "engine"?: str, "bbox_shift"?: int}``. The lip-sync engine is built
    per job by name (``engine``, default ``lipsync.engine``) with its per-render options, and
    kept in a bounded :class:`~digihuman.pipeline.engines.LipSyncCache`, so the next render with
    the same choice does not load the weights again. The output is
    ``results/output/<job id>.mp4`` (renamed into place by the pipeline when complete); the
    result records the engine and the ``bbox_shift`` applied (null: the engine has none).

    A cached avatar (``avatar_id``) is reused only when its manifest's fingerprint (engine,
    its settings such as MuseTalk's ``bbox_shift``, fps) matches this render's engine;
    otherwise it is prepared again from its recorded source (``avatar.prepare.obtain``).
    """
    from digihuman.pipeline.engines import LipSyncCache

    engines = LipSyncCache(settings)
    engines.get()  # the default engine, built at start as before (a bad setting fails early)

    def handle(ctx: JobContext) -> dict[str, Any]:
        from digihuman.avatar.prepare import obtain
        from digihuman.avatar.store import AvatarStore
        from digihuman.media.audio import load_audio
        from digihuman.pipeline import render as pipeline

        root = ctx.data_root
        p = ctx.payload
        shift = p.get("bbox_shift")
        engine, applied, ignored = engines.get(
            str(p["engine"]) if p.get("engine") else None,
            bbox_shift=int(shift) if shift is not None else None,
        )
        chosen: dict[str, Any] = {
            "engine": engine.name,
            "bbox_shift": applied.get("bbox_shift"),
            **({"ignored": ignored} if ignored else {}),
        }
        final = root.output / f"{ctx.job_id}.mp4"
        rel = root.relative(final)
        if final.exists():  # a previous attempt finished
            return {"path": rel, **chosen}
        source = str(p.get("source") or "")
        avatar_id = p.get("avatar_id")
        audio = load_audio(
            root.resolve(str(p.get("audio") or ""), must_exist=True),
            max_seconds=settings.api.max_audio_seconds,  # a decompression bomb stops at the limit
        )
        seconds = len(audio) / 16000.0
        if seconds > settings.api.max_audio_seconds:
            raise TooLarge(
                f"audio is {seconds:.0f} s long; the limit is {settings.api.max_audio_seconds} s"
            )

        def prep_cb(f: float, m: str) -> None:
            ctx.progress(0.3 * f, f"prepare: {m}")

        def render_cb(f: float, m: str) -> None:
            ctx.progress(0.3 + 0.7 * f, f"render: {m}")

        prepared, refreshed = obtain(
            AvatarStore(root.avatars),
            engine,
            source=root.resolve(source, must_exist=True) if source else None,
            avatar_id=str(avatar_id) if avatar_id else None,
            fps=engine.capabilities.fps,
            progress=prep_cb,
        )
        result = pipeline.render(
            engine,
            prepared,
            audio,
            final,
            save_frames=bool(p.get("save_frames")),
            progress=render_cb,
        )
        return {
            "path": rel,
            "frames": result.n_frames,
            "fps": result.fps,
            "seconds": round(result.audio_seconds, 3),
            **chosen,
            **({"avatar_refreshed": refreshed} if refreshed else {}),
        }

    return handle


# --------------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------------


def make_debug(settings: Settings) -> Handler:
    """A diagnostic kind: ``{"sleep": s, "fail": bool, "write": bool}``; no engine.

    ``write`` puts ``tests/debug/<job id>.json`` (atomically) — the reliability tests count
    these files to prove exactly one output per job. For the fault tests and
    ``bench/fault_run.py``: ``trace`` appends ``start``/``end`` lines (job, attempt, pid) to
    ``tests/debug/trace-<pid>.log``, counting in the handler itself; ``fail_on_attempt: n``
    raises a retryable error on attempt n, ``reject_on_attempt: n`` a user error (``failed``),
    ``reject`` that error on every attempt;
    ``write_sleep: s`` holds the output's temp file open that long before the rename.
    """

    def trace(ctx: JobContext, what: str) -> None:
        line = f"{what} {ctx.job_id} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
        path = ctx.data_root.tests / "debug" / f"trace-{os.getpid()}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one small O_APPEND write: lines never interleave
        finally:
            os.close(fd)

    def handle(ctx: JobContext) -> dict[str, Any]:
        p = ctx.payload
        if p.get("trace"):
            trace(ctx, "start")
        outcome = "error"
        try:
            out = run(ctx, p)
            outcome = "ok"
            return out
        finally:
            if p.get("trace"):
                trace(ctx, f"end-{outcome}")

    def run(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("fail"):
            raise RuntimeError(f"debug job {ctx.job_id} was told to fail")
        if p.get("reject"):
            raise InputError(f"debug job {ctx.job_id} was told to refuse")
        sleep = float(p.get("sleep") or 0.0)
        if sleep > 0:
            steps = max(1, int(sleep / 0.05))
            for i in range(steps):
                time.sleep(sleep / steps)
                ctx.progress((i + 1) / steps, "sleeping")
        if p.get("fail_on_attempt") == ctx.attempt:
            raise RuntimeError(f"debug job {ctx.job_id} fails on attempt {ctx.attempt}")
        if p.get("reject_on_attempt") == ctx.attempt:
            raise InputError(f"debug job {ctx.job_id} is refused on attempt {ctx.attempt}")
        out: dict[str, Any] = {"pid": os.getpid(), "attempt": ctx.attempt}
        if p.get("write"):
            final = ctx.data_root.tests / "debug" / f"{ctx.job_id}.json"
            if not final.exists():
                _clean_stale(final)
                with atomic_output(final) as tmp:
                    tmp.write_text(f'{{"job": "{ctx.job_id}", "pid": {os.getpid()}}}')
                    time.sleep(float(p.get("write_sleep") or 0.0))
            out["path"] = ctx.data_root.relative(final)
        return out

    return handle


FACTORIES: dict[str, Callable[[Settings], Handler]] = {
    "tts": make_tts,
    "asr": make_asr,
    "bqfk": make_bqfk,
    "render": make_render,
    "stream": make_stream,
    "debug": make_debug,
    "answer": make_answer,  # rooms: uploaded answers (jobs/answers.py)
}


def make_handler(kind: str, settings: Settings) -> Handler:
    try:
        factory = FACTORIES[kind]
    except KeyError:
        raise InputError(
            f"unknown job kind {kind!r}; choose one of: {', '.join(sorted(FACTORIES))}"
        ) from None
    return factory(settings)
