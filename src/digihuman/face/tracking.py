"""Temporal smoothing of landmarks: a One-Euro filter (Casiez, Roussel, Vogel, CHI 2012).

A low-pass filter whose cutoff rises with speed: a still head gets heavy smoothing (no
jitter), a moving head or an opening mouth gets little (no lag). Speeds are measured in
face sizes per second (``scale``), so the same settings work for small and large faces.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return np.asarray(1.0 / (1.0 + tau / dt))


class OneEuroFilter:
    """One-Euro filter over arrays of 2-D points (N, 2); speed is taken per point.

    ``min_cutoff`` (Hz) sets the smoothing of a still face, ``beta`` how fast the cutoff
    rises with speed (per face size per second), ``d_cutoff`` (Hz) smooths the speed itself.
    """

    def __init__(
        self,
        fps: float = 25.0,
        *,
        min_cutoff: float = 0.5,
        beta: float = 8.0,
        d_cutoff: float = 1.0,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.dt = 1.0 / fps
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def reset(self) -> None:
        self._x = None
        self._dx = None

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x = x.copy()
            self._dx = None
            return x.copy()
        speed = np.linalg.norm((x - self._x).reshape(x.shape[0], -1), axis=1)
        speed = speed / max(scale, 1e-6) / self.dt
        if self._dx is None:
            # the first speed is taken as is: starting from 0 would lag a face that is
            # already moving when tracking starts
            self._dx = speed
        else:
            a_d = _alpha(self.d_cutoff, self.dt)
            self._dx = a_d * speed + (1.0 - a_d) * self._dx
        a = _alpha(self.min_cutoff + self.beta * self._dx, self.dt)
        a = a.reshape((-1,) + (1,) * (x.ndim - 1))
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()
