"""The ``answer`` job kind: an uploaded answer → transcript with word timings, delivery metrics
and (when an LLM is configured) a content evaluation, stored on the answer's row.

Payload: ``{"room": zbjname, "index": n, "media": "tests/answers/<file>"}``. The API enqueues
it after an upload (``api/rooms.py``); the job id is the one the answer row names, so a job
of an answer that was replaced since (a newer upload) finds another id there and does nothing,
and a job run twice (at-least-once delivery) writes the same row again. The worker opens the
rooms database itself (same URL as the API).
"""

from __future__ import annotations

import logging
from typing import Any, cast

from digihuman.config import Settings
from digihuman.errors import DigihumanError, TooLarge
from digihuman.jobs.worker import Handler, JobContext

log = logging.getLogger(__name__)


def transcript_json(tr: Any, words: list[Any], estimated: bool) -> dict[str, Any]:
    return {
        "text": tr.text,
        "language": tr.language,
        "duration_s": round(float(tr.duration), 3),
        "word_timings": "estimated" if estimated else "asr",
        "segments": [
            {"start": round(s.start, 2), "end": round(s.end, 2), "text": s.text}
            for s in tr.segments
        ],
        "words": [[round(w.start, 2), round(w.end, 2), w.text] for w in words],
        "options": {k: v for k, v in tr.options.items() if isinstance(v, str | int | float)},
    }


def make_answer(settings: Settings) -> Handler:
    from digihuman.engines.asr import create_asr
    from digihuman.rooms.db import default_url, open_database
    from digihuman.rooms.evaluate import create_evaluator
    from digihuman.rooms.store import RoomStore

    engine = create_asr(settings.asr)
    store = RoomStore(open_database(settings.rooms.database_url or default_url(settings.data_dir)))
    evaluator = create_evaluator(settings.rooms, settings.questions)
    rooms = settings.rooms
    max_seconds = settings.api.max_audio_seconds
    max_attempts = settings.jobs.max_attempts

    def handle(ctx: JobContext) -> dict[str, Any]:
        p = ctx.payload
        zbjname, index = str(p.get("room") or ""), int(p.get("index", -1))
        ans = store.get_answer(zbjname, index)
        if ans is None or ans.job_id != ctx.job_id:  # replaced by a newer upload (or gone)
            return {"stale": True, "room": zbjname, "index": index}
        if ans.status == "done":  # a re-delivery after the result was stored
            return {"room": zbjname, "index": index, "status": "done"}
        try:
            return analyse(ctx, zbjname, index, str(p.get("media") or ans.media_path or ""))
        except DigihumanError as e:
            if e.http_status < 500 or ctx.attempt >= max_attempts:  # no retry comes: record it
                store.update_answer(
                    zbjname, index, job_id=ctx.job_id, status="failed", error=str(e)[:4000]
                )
            raise
        except Exception as e:
            if ctx.attempt >= max_attempts:
                store.update_answer(
                    zbjname,
                    index,
                    job_id=ctx.job_id,
                    status="failed",
                    error=f"analysis failed ({type(e).__name__}: {e})"[:4000],
                )
            raise

    def analyse(ctx: JobContext, zbjname: str, index: int, media: str) -> dict[str, Any]:
        from digihuman.media.audio import load_audio
        from digihuman.rooms.delivery import Word, delivery_metrics, words_from_segments

        room = store.require(zbjname)
        question = next((q for q in room.questions if q.index == index), None)
        store.update_answer(zbjname, index, job_id=ctx.job_id, status="analysing")
        ctx.progress(0.05, "decoding audio")
        path = ctx.data_root.resolve(media, must_exist=True)
        audio = load_audio(path, max_seconds=max_seconds)  # video: its first audio track
        seconds = len(audio) / 16000.0
        if seconds > max_seconds:
            raise TooLarge(f"the answer is {seconds:.0f} s long; the limit is {max_seconds:g} s")
        ctx.progress(0.15, "transcribing")
        caps = engine.capabilities
        if getattr(caps, "word_timestamps", False):
            # the capability promises the keyword (ASRCapabilities.word_timestamps)
            tr = cast(Any, engine).transcribe(audio, word_timestamps=True)
            words = [Word(w.start, w.end, w.text) for s in tr.segments for w in s.words]
            estimated = False
        else:
            tr = engine.transcribe(audio)
            words = words_from_segments(tr.segments, tr.language)
            estimated = True
        language = tr.language if tr.language in ("zh", "en") else room.language
        ctx.progress(0.7, "delivery metrics")
        metrics = delivery_metrics(
            words,
            text=tr.text,
            language=language,
            duration_s=seconds,
            suggested_s=float(question.suggested_s if question else 90),
            long_pause_s=rooms.long_pause_s,
        )
        data: dict[str, Any] = {
            "transcript": transcript_json(tr, words, estimated),
            "delivery": metrics,
            "evaluation": None,
            "evaluation_error": None,
        }
        if evaluator is not None and tr.text.strip() and question is not None:
            ctx.progress(0.8, "content evaluation")
            ev = evaluator.evaluate(
                question.text, tr.text, language=room.language, competency=question.competency
            )
            data["evaluation"] = ev.result
            data["evaluation_error"] = ev.error
            data["evaluation_model"] = ev.model
        elif evaluator is not None:
            data["evaluation_error"] = "nothing was said: no transcript to evaluate"
        written = store.update_answer(zbjname, index, job_id=ctx.job_id, status="done", data=data)
        return {
            "room": zbjname,
            "index": index,
            "status": "done" if written else "stale",
            "text": tr.text,
            "language": tr.language,
            "rate_per_min": metrics["rate_per_min"],
        }

    return handle
