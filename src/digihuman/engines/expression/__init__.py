"""Expression analysis of a video answer: fer (default: MediaPipe face mesh + the FER model),
fake.

* :func:`create_expression` builds the engine an :class:`~digihuman.config.ExpressionSettings`
  names; :func:`analysis_options` the sampling and aggregation options from the same section.
* :func:`analyze_video` samples a video file, runs the engine and returns the per-answer
  summary (aggregates + per-frame timeline), a JSON-able dict.
* :func:`create_summary`: the optional vision-LLM summary (:mod:`.summary`), when configured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .aggregate import SummaryOptions, summarize
from .base import TimedFrame

if TYPE_CHECKING:
    from digihuman.config import ExpressionSettings, QuestionsSettings

    from .base import ExpressionEngine
    from .summary import VisionSummary


def expression_kwargs(settings: ExpressionSettings, engine: str | None = None) -> dict[str, Any]:
    name = engine or settings.engine
    if name == "fer":
        return {"num_threads": settings.num_threads}
    return {}


def create_expression(settings: ExpressionSettings, engine: str | None = None) -> ExpressionEngine:
    from .base import EXPRESSION

    name = engine or settings.engine
    return EXPRESSION.create(name, **expression_kwargs(settings, name))


def create_summary(
    settings: ExpressionSettings, questions: QuestionsSettings | None = None
) -> VisionSummary | None:
    """The vision-LLM summariser the settings ask for, or None (``summary=off``, or ``auto``
    without ``summary_base_url``). With ``summary=openai`` the endpoint defaults to the
    questions engine's; the model and key default to the questions engine's either way."""
    from .summary import VisionSummary

    q = questions
    if settings.summary == "off" or (settings.summary == "auto" and not settings.summary_base_url):
        return None
    base = settings.summary_base_url or (q.openai_base_url if q else None)
    if not base:
        from digihuman.errors import InputError

        raise InputError(
            "the expression summary needs an OpenAI-compatible base URL: set "
            "DIGIHUMAN_EXPRESSION__SUMMARY_BASE_URL (or DIGIHUMAN_QUESTIONS__OPENAI_BASE_URL)"
        )
    key = settings.summary_api_key or (q.openai_api_key if q else None)
    return VisionSummary(
        base_url=base,
        model=settings.summary_model or (q.openai_model if q else "gpt-4o-mini"),
        api_key=key.get_secret_value() if key else None,
        timeout_s=settings.summary_timeout_s,
    )


@dataclass(frozen=True)
class AnalysisOptions:
    sample_fps: float = 2.0
    eye_fps: float = 15.0
    max_seconds: float = 3600.0
    max_side: int = 1280
    max_yaw: float = 20.0
    max_pitch: float = 20.0
    blink_ratio: float = 0.6


def analysis_options(settings: ExpressionSettings) -> AnalysisOptions:
    s = settings
    return AnalysisOptions(
        sample_fps=s.sample_fps,
        eye_fps=s.eye_fps,
        max_seconds=s.max_seconds,
        max_side=s.max_side,
        max_yaw=s.max_yaw,
        max_pitch=s.max_pitch,
        blink_ratio=s.blink_ratio,
    )


def analyze_video(
    engine: ExpressionEngine,
    path: str | os.PathLike[str],
    *,
    options: AnalysisOptions = AnalysisOptions(),
    progress: Callable[[float, str], None] | None = None,
    keep_frames: list[np.ndarray] | None = None,
    keep: int = 3,
) -> dict[str, Any]:
    """Sample ``path``, measure every sampled frame, aggregate. Raises
    :class:`~digihuman.errors.InputError` for a corrupt, truncated or face-less-by-format file
    (a video without any face is a valid answer: ``face_visible`` 0)."""
    from .sampling import SampleStats, prefetch, sample_video

    stats = SampleStats()
    frames = prefetch(
        sample_video(
            path,
            sample_fps=options.sample_fps,
            eye_fps=options.eye_fps,
            max_seconds=options.max_seconds,
            max_side=options.max_side,
            stats=stats,
        )
    )
    kept: list[tuple[float, np.ndarray]] = []
    if keep_frames is not None:
        frames = _keeping(frames, kept, keep)
    start = time.perf_counter()
    measures = []
    last_report = start
    for m in engine.analyze(frames):
        measures.append(m)
        now = time.perf_counter()
        if progress is not None and now - last_report >= 1.0:
            last_report = now
            declared = stats.declared_s or 0.0
            frac = min(0.95, m.t / declared) if declared > 0 else 0.5
            progress(frac, f"analysing expressions ({m.t:.0f} s)")
    elapsed = time.perf_counter() - start
    summary = summarize(
        measures,
        duration_s=stats.duration_s,
        options=SummaryOptions(
            sample_fps=options.sample_fps,
            eye_fps=options.eye_fps,
            max_yaw=options.max_yaw,
            max_pitch=options.max_pitch,
            blink_ratio=options.blink_ratio,
            engine=engine.name,
        ),
    )
    if keep_frames is not None:
        with_face = {m.t for m in measures if m.full and m.face}
        keep_frames.extend(img for t, img in kept if t in with_face)
    summary["analysis"] = {
        "seconds": round(elapsed, 3),
        "sampled_frames": len(measures),
        "frames_per_s": round(len(measures) / elapsed, 1) if elapsed > 0 else None,
        "decoded_frames": stats.decoded,
        "stopped_at_limit": stats.stopped_at_limit,
        "frame_size": list(stats.size),
    }
    return summary


def _keeping(
    frames: Iterator[TimedFrame], kept: list[tuple[float, np.ndarray]], n: int
) -> Iterator[TimedFrame]:
    """Pass ``frames`` through, keeping about ``n`` full frames spread over the video (a copy
    shrunk to 384 px): every ``stride``-th one, the stride doubling whenever 2n are kept."""
    import cv2

    stride, seen = 1, 0
    for f in frames:
        if f.full and n > 0:
            if seen % stride == 0:
                h, w = f.image.shape[:2]
                k = min(1.0, 384 / max(h, w))
                size = (max(1, round(w * k)), max(1, round(h * k)))
                kept.append((f.t, cv2.resize(f.image, size, interpolation=cv2.INTER_AREA)))
                if len(kept) >= 2 * n:
                    del kept[1::2]
                    stride *= 2
            seen += 1
        yield f


__all__ = [
    "AnalysisOptions",
    "analysis_options",
    "analyze_video",
    "create_expression",
    "create_summary",
    "expression_kwargs",
]
