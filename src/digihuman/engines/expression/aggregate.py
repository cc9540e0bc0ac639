"""Per-answer aggregates from the per-frame measures (shared by every engine).

* ``face_visible``: share of the full (timeline) frames with a face, 0-1.
* ``looking_at_camera``: share of the frames with a face whose head pose is within
  ``max_yaw`` / ``max_pitch`` degrees of frontal (an eye-contact proxy: the head, not the gaze).
* ``dominant_expressions``: each class's share of the face frames where it is the most likely,
  largest first; ``mean_expressions``: the mean probabilities.
* ``blinks`` / ``blinks_per_minute``: closings of the eyes, on every sampled frame (full and
  eye-only): eye openness below ``blink_ratio`` of the answer's own open-eye level (its 80th
  percentile), counted once per closing, per minute of face-visible time.
* ``head_movement``: mean angular speed of the head between consecutive face frames (deg/s)
  and a level: low (< 8), moderate (< 20), high.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .base import EMOTIONS, FrameMeasure

MOVEMENT_LEVELS = ((8.0, "low"), (20.0, "moderate"))


@dataclass(frozen=True)
class SummaryOptions:
    sample_fps: float = 2.0
    eye_fps: float = 15.0
    max_yaw: float = 20.0
    max_pitch: float = 20.0
    blink_ratio: float = 0.6
    engine: str = "fer"


def _movement_level(speed: float | None) -> str | None:
    if speed is None:
        return None
    for limit, name in MOVEMENT_LEVELS:
        if speed < limit:
            return name
    return "high"


def count_blinks(series: list[tuple[float, float | None]], ratio: float) -> tuple[int, float]:
    """(blinks, seconds of face-visible time) from (t, eye openness or None) samples."""
    vals = [v for _, v in series if v is not None]
    if len(vals) < 3:
        return 0, 0.0
    open_level = float(np.percentile(vals, 80))
    thresh = ratio * open_level
    blinks, closed = 0, False
    seen = 0.0
    prev_t: float | None = None
    for t, v in series:
        if v is None:
            closed, prev_t = False, None
            continue
        if prev_t is not None:
            seen += t - prev_t
        prev_t = t
        if v < thresh and not closed:
            blinks += 1
            closed = True
        elif v >= thresh:
            closed = False
    return blinks, seen


def summarize(
    measures: Iterable[FrameMeasure], *, duration_s: float, options: SummaryOptions
) -> dict[str, Any]:
    ms = list(measures)
    full = [m for m in ms if m.full]
    faces = [m for m in full if m.face and m.emotions is not None]
    n_full = len(full)
    face_visible = len(faces) / n_full if n_full else 0.0
    looking = [
        abs(m.yaw or 0.0) <= options.max_yaw and abs(m.pitch or 0.0) <= options.max_pitch
        for m in faces
    ]
    dominant: dict[str, int] = {}
    for m in faces:
        d = m.dominant
        if d is not None:
            dominant[d] = dominant.get(d, 0) + 1
    mean_probs = (
        np.mean(np.array([m.emotions for m in faces], np.float64), axis=0) if faces else None
    )
    blinks, seen = count_blinks(
        [(m.t, m.eye_openness if m.face else None) for m in ms], options.blink_ratio
    )
    speeds = []
    for a, b in itertools.pairwise(faces):
        dt = b.t - a.t
        if dt <= 0 or dt > 3.0 / max(options.sample_fps, 1e-3):
            continue  # the face was gone in between
        dist = math.sqrt(
            ((b.yaw or 0) - (a.yaw or 0)) ** 2
            + ((b.pitch or 0) - (a.pitch or 0)) ** 2
            + ((b.roll or 0) - (a.roll or 0)) ** 2
        )
        speeds.append(dist / dt)
    speed = float(np.mean(speeds)) if speeds else None

    def mean(vals: list[float | None]) -> float | None:
        v = [x for x in vals if x is not None]
        return round(float(np.mean(v)), 4) if v else None

    def std(vals: list[float | None]) -> float | None:
        v = [x for x in vals if x is not None]
        return round(float(np.std(v)), 3) if len(v) > 1 else None

    timeline = [
        {
            "t": m.t,
            "face": m.face,
            "dominant": m.dominant,
            "emotions": dict(zip(EMOTIONS, m.emotions, strict=True)) if m.emotions else None,
            "yaw": m.yaw,
            "pitch": m.pitch,
            "roll": m.roll,
            "looking": (
                abs(m.yaw or 0.0) <= options.max_yaw and abs(m.pitch or 0.0) <= options.max_pitch
            )
            if m.face
            else None,
            "smile": m.smile,
            "eye_openness": m.eye_openness,
        }
        for m in full
    ]
    return {
        "duration_s": round(duration_s, 3),
        "frames": n_full,
        "eye_frames": len(ms) - n_full,
        "face_visible": round(face_visible, 4),
        "looking_at_camera": round(sum(looking) / len(looking), 4) if looking else 0.0,
        "dominant_expressions": [
            {"label": k, "share": round(v / len(faces), 4)}
            for k, v in sorted(dominant.items(), key=lambda kv: -kv[1])
        ],
        "mean_expressions": (
            {k: round(float(v), 4) for k, v in zip(EMOTIONS, mean_probs, strict=True)}
            if mean_probs is not None
            else None
        ),
        "smile": mean([m.smile for m in faces]),
        "blinks": blinks,
        "blinks_per_minute": round(blinks * 60.0 / seen, 2) if seen >= 1.0 else None,
        "head_movement": {
            "level": _movement_level(speed),
            "deg_per_s": round(speed, 2) if speed is not None else None,
            "yaw_std": std([m.yaw for m in faces]),
            "pitch_std": std([m.pitch for m in faces]),
            "roll_std": std([m.roll for m in faces]),
        },
        "options": asdict(options),
        "timeline": timeline,
    }
