"""The lite lip-sync engine: no weights, CPU only, hundreds of frames per second.

``prepare`` tracks the face (MediaPipe face-mesh landmarks run with ai-edge-litert) on every
source frame and stores per frame the 468 landmarks and the mouth interior colours taken from
the photo. ``generate`` turns the audio into per-frame mouth parameters
(:mod:`.lite_audio`: loudness → openness, spectral shape → width/rounding, gated and smoothed,
chunk-invariant with a small lookahead) and renders each frame with a landmark-driven warp in a
face-aligned frame plus a mouth interior and natural blinks while speaking (:mod:`.lite_warp`).
The rest pose (silence, pauses, bilabials) is closed lips: a photo that smiles with its mouth
open is closed first and opened from there, so speech visibly opens and closes any portrait.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from digihuman.engines.base import AudioStream, PreparedAvatar, Progress, no_progress
from digihuman.engines.lipsync.lite_audio import (
    WINDOW_S,
    MouthParams,
    MouthTracker,
    frames_from_stream,
    lookahead_s,
)
from digihuman.errors import InputError, missing_extra
from digihuman.timing import pingpong
from digihuman.types import LipSyncCapabilities, VideoFrame

log = logging.getLogger(__name__)

VERSION = "1"
"""Bump when what ``prepare`` stores or how it is computed changes."""

BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.07, 0.03, 0.10


class BlinkSchedule:
    """Deterministic natural blinks: intervals uniform in [2, 6] s from ``seed``.

    ``closure(i)`` is a pure function of the absolute frame index, so blinks continue smoothly
    across ``generate`` calls. The first blink starts no earlier than 2 s. ``blink_at(i)`` also
    says which blink (its number) frame ``i`` belongs to, so that a caller can let a blink run
    or skip it whole.
    """

    def __init__(self, fps: float, seed: int = 0, lo: float = 2.0, hi: float = 6.0) -> None:
        self.fps = fps
        self._rng = np.random.default_rng(seed)
        self._lo, self._hi = lo, hi
        self._starts: list[float] = []

    def _extend(self, t: float) -> None:
        while not self._starts or self._starts[-1] <= t + 1.0:
            prev = self._starts[-1] if self._starts else 0.0
            self._starts.append(prev + float(self._rng.uniform(self._lo, self._hi)))

    def closure(self, i: int) -> float:
        return self.blink_at(i)[1]

    def blink_at(self, i: int) -> tuple[int | None, float]:
        """(number of the blink under way at frame ``i`` or None, eyelid closure 0..1)."""
        t = (i + 0.5) / self.fps
        self._extend(t)
        total = BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S
        for nb in range(len(self._starts) - 1, -1, -1):
            s = self._starts[nb]
            if s <= t:
                dt = t - s
                if dt >= total:
                    return None, 0.0
                if dt < BLINK_CLOSE_S:
                    x = dt / BLINK_CLOSE_S
                elif dt < BLINK_CLOSE_S + BLINK_HOLD_S:
                    x = 1.0
                else:
                    x = 1.0 - (dt - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S
                return nb, float(np.clip(x, 0.0, 1.0) ** 0.7)
        return None, 0.0


class FrameRig:
    """One source frame's warp geometry: the mouth rig, and the eye regions built on first use
    (a video avatar whose frames never blink never pays for them)."""

    def __init__(self, pts: np.ndarray, width: int, height: int) -> None:
        from digihuman.engines.lipsync.lite_warp import build_mouth_rig

        self._pts, self._size = pts, (width, height)
        self.mouth = build_mouth_rig(pts, width, height)
        self._eyes: tuple[Any, Any] | None = None

    def eyes(self) -> tuple[Any, Any]:
        if self._eyes is None:  # two threads may both build it: the same result, no harm
            from digihuman.engines.lipsync.lite_warp import EYE_A, EYE_B, build_eye_region

            w, h = self._size
            self._eyes = (
                build_eye_region(self._pts, EYE_A, w, h),
                build_eye_region(self._pts, EYE_B, w, h),
            )
        return self._eyes


class LiteEngine:
    """Portrait or video + speech → lip-synced frames, with no downloaded weights."""

    name = "lite"

    def __init__(
        self,
        fps: float = 25.0,
        face_index: int | None = None,
        blink: bool = True,
        seed: int = 0,
        strength: float = 1.0,
        close_rest: bool = True,
        cache_frames: int = 256,
        analyzer: Any = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            log.debug("lite engine ignores settings %s", sorted(unknown))
        self.fps = float(fps)
        self.face_index = face_index
        self.blink = bool(blink)
        self.seed = int(seed)
        self.strength = float(strength)
        self.close_rest = bool(close_rest)
        self.cache_frames = int(cache_frames)
        self._analyzer = analyzer
        self.capabilities = LipSyncCapabilities(
            fps=self.fps,
            needs_weights=False,
            device="cpu",
            streaming=True,
            lookahead_s=round(lookahead_s(self.fps), 4),
            input_kinds=("image", "video", "images"),
        )
        self._rigs: OrderedDict[tuple[int, int], tuple[np.ndarray, FrameRig]] = OrderedDict()
        self._lock = threading.Lock()  # one engine may serve several live sessions

    # ------------------------------------------------------------------ prepare

    def settings_fingerprint(self) -> dict[str, Any]:
        return {"engine": self.name, "version": VERSION, "face_index": self.face_index}

    def _face(self) -> Any:
        if self._analyzer is None:
            try:
                from digihuman.face import FaceAnalyzer
            except ImportError as e:  # pragma: no cover - core dependency
                raise missing_extra("ai-edge-litert", "core") from e
            self._analyzer = FaceAnalyzer()
        return self._analyzer

    def prepare(
        self, frames: np.ndarray, fps: float, *, progress: Progress = no_progress
    ) -> PreparedAvatar:
        from digihuman.engines.lipsync.lite_warp import mouth_look

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise InputError("the avatar needs at least one RGB frame (N, H, W, 3)")
        frames = frames.astype(np.uint8, copy=False)
        n = frames.shape[0]
        progress(0.0, "tracking the face")
        face = self._face()

        def track_progress(fraction: float, message: str) -> None:
            progress(0.9 * fraction, message)

        if n == 1:
            tracks = [face.analyze(frames[0], face_index=self.face_index)]
        else:
            tracks = face.track(frames, face_index=self.face_index, progress=track_progress)
        lms = np.stack([np.asarray(t.points, dtype=np.float32)[:, :2] for t in tracks])
        looks = np.stack([mouth_look(frames[i], lms[i]) for i in range(n)])
        progress(1.0, "prepared")
        meta = dict(self.settings_fingerprint())
        meta.update({"n_frames": n, "fps": float(fps)})
        return PreparedAvatar(
            engine=self.name,
            fps=float(fps),
            frames=frames,
            arrays={"landmarks": lms, "mouth_look": looks},
            meta=meta,
        )

    # ------------------------------------------------------------------ generate

    def mouth_params(self, audio: AudioStream) -> Iterator[MouthParams]:
        """The per-frame mouth parameters for an audio stream (as ``generate`` uses them)."""
        tracker = MouthTracker(self.fps)
        return frames_from_stream(audio, self.fps, WINDOW_S, tracker.step)

    def _rig(self, prepared: PreparedAvatar, k: int) -> FrameRig:
        lms = prepared.arrays["landmarks"]
        key = (id(lms), k)
        with self._lock:
            cached = self._rigs.get(key)
            if cached is not None and cached[0] is lms:
                self._rigs.move_to_end(key)
                return cached[1]
        w, h = prepared.size
        rig = FrameRig(lms[k], w, h)
        with self._lock:
            self._rigs[key] = (lms, rig)  # holding ``lms`` keeps its id unique while cached
            while len(self._rigs) > self.cache_frames:
                self._rigs.popitem(last=False)
        return rig

    def rest_close(self, prepared: PreparedAvatar, k: int, openness: float = 0.0) -> float:
        """How much of source frame ``k``'s own lip gap is closed at ``openness`` (0: the
        photo's mouth is already closed and silence shows the frame unchanged; 1: the lips
        touch; more: pressed together, see :meth:`.lite_warp.MouthRig.close_for`)."""
        return self._rig(prepared, k).mouth.close_for(openness) if self.close_rest else 0.0

    def render(
        self, prepared: PreparedAvatar, k: int, openness: float, width: float, blink: float
    ) -> np.ndarray:
        """Source frame ``k`` with the given mouth shape and eyelid closure.

        Openness counts from the rest pose, closed lips: a photo whose mouth is open is first
        closed (``rest_close``), so ``render(p, k, 0, 0, 0)`` is the constant rest frame."""
        import cv2

        from digihuman.engines.lipsync.lite_warp import render_interior

        src = prepared.frames[k]
        out = src.copy()
        rig = self._rig(prepared, k)
        mouth = rig.mouth
        close = mouth.close_for(openness) if self.close_rest else 0.0
        if openness == 0.0 and width == 0.0 and blink == 0.0 and close == 0.0:
            return out
        if openness or width or close:
            x0, y0, x1, y1 = mouth.region.box
            if x1 > x0 and y1 > y0:
                mx, my = mouth.region.maps((close, openness, width))
                roi = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                if openness > 0.01:
                    look = prepared.arrays["mouth_look"][k]
                    render_interior(roi, src, mouth, look, openness, width, close)
                out[y0:y1, x0:x1] = roi
        if blink:
            for eye in rig.eyes():
                x0, y0, x1, y1 = eye.box
                if x1 > x0 and y1 > y0:
                    mx, my = eye.maps((blink,))
                    out[y0:y1, x0:x1] = cv2.remap(
                        src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                    )
        return out

    def generate(
        self, prepared: PreparedAvatar, audio: AudioStream, *, start_frame: int = 0
    ) -> Iterator[VideoFrame]:
        if "landmarks" not in prepared.arrays or "mouth_look" not in prepared.arrays:
            raise InputError(
                "this avatar was not prepared by the lite engine; "
                "prepare it again with --engine lite"
            )
        n = prepared.n_frames
        blinks = BlinkSchedule(self.fps, self.seed) if self.blink else None
        # A blink runs only if it starts while someone speaks (decided on its first frame here
        # and then run whole): silence stays a still frame, no blink, no jitter.
        runs: dict[int, bool] = {}
        for j, p in enumerate(self.mouth_params(audio)):
            i = start_frame + j
            k = pingpong(i, n)
            b = 0.0
            if blinks is not None:
                nb, b = blinks.blink_at(i)
                if nb is not None and not runs.setdefault(nb, p.voiced):
                    b = 0.0
                if len(runs) > 8:
                    runs.pop(min(runs))
            o = min(1.0, p.openness * self.strength)
            img = self.render(prepared, k, o, p.width, b)
            yield VideoFrame(image=img, index=i, fps=self.fps, speaking=p.voiced)
