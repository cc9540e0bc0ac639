"""A deterministic, weight-free lip-sync fake for tests of the other layers.

It honours the whole contract (frame counts per segment, chunk invariance, ``start_frame``
continuing the forward-then-backward source cycle) and draws a bar at the bottom of the source
frame whose width is proportional to the audio RMS of the frame's span, so a test can read the
audio level back from the pixels: ``bar_level(frame)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from digihuman.engines.base import AudioStream, PreparedAvatar, Progress, no_progress
from digihuman.engines.lipsync.lite_audio import frames_from_stream
from digihuman.errors import InputError
from digihuman.timing import pingpong
from digihuman.types import LipSyncCapabilities, VideoFrame

BAR_HEIGHT = 8
BAR_COLOR = (255, 0, 255)


def bar_level(image: np.ndarray) -> float:
    """The level in [0, 1] that :class:`FakeLipSync` drew into ``image``."""
    row = image[-BAR_HEIGHT // 2]
    on = np.all(row == np.array(BAR_COLOR, dtype=np.uint8), axis=-1)
    return float(on.sum()) / image.shape[1]


class FakeLipSync:
    """Source frame + a magenta bar whose width is ``min(1, 4 * rms)`` of the frame width."""

    name = "fake"
    VERSION = "1"

    def __init__(self, fps: float = 25.0, **_: Any) -> None:
        self.fps = float(fps)
        self.capabilities = LipSyncCapabilities(
            fps=self.fps, needs_weights=False, device="cpu", streaming=True, lookahead_s=0.0
        )

    def settings_fingerprint(self) -> dict[str, Any]:
        return {"engine": self.name, "version": self.VERSION}

    def prepare(
        self, frames: np.ndarray, fps: float, *, progress: Progress = no_progress
    ) -> PreparedAvatar:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise InputError("the avatar needs at least one RGB frame (N, H, W, 3)")
        progress(1.0, "prepared")
        return PreparedAvatar(
            engine=self.name,
            fps=float(fps),
            frames=frames.astype(np.uint8, copy=False),
            arrays={"index": np.arange(frames.shape[0], dtype=np.int32)},
            meta=self.settings_fingerprint(),
        )

    def generate(
        self, prepared: PreparedAvatar, audio: AudioStream, *, start_frame: int = 0
    ) -> Iterator[VideoFrame]:
        n = prepared.n_frames
        # The window is exactly one frame long: the bar shows the RMS of the frame's own span
        # (a window centred on the frame's centre, which needs no lookahead past its end).
        levels = frames_from_stream(
            audio, self.fps, 1.0 / self.fps, lambda w: float(np.sqrt(np.mean(w * w)))
        )
        for j, rms in enumerate(levels):
            k = start_frame + j
            img = prepared.frames[pingpong(k, n)].copy()
            width = round(min(1.0, 4.0 * rms) * img.shape[1])
            img[-BAR_HEIGHT:, :width] = BAR_COLOR
            yield VideoFrame(image=img, index=k, fps=self.fps, speaking=rms > 1e-3)
