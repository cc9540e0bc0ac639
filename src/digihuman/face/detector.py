"""BlazeFace face detection (MediaPipe short- and full-range models) with our own decoding.

Facts used (from MediaPipe's face_detection graphs and SSD anchor calculator):

* short range: input 128x128, anchors from 4 layers with strides (8, 16, 16, 16), two anchors
  per cell on the 16x16 grid and six on the 8x8 grid (896 in all);
* full range: input 192x192, one layer with stride 4, one anchor per cell (48x48 = 2304);
* anchors are fixed-size (w = h = 1), centred at ((x + 0.5) / fw, (y + 0.5) / fh);
* the input is the whole image letterboxed to a square (aspect kept, zero padding), RGB
  scaled to [-1, 1];
* each anchor regresses 16 numbers: box centre x, y, width, height, then six keypoints
  (x, y) — right eye, left eye, nose tip, mouth centre, right ear, left ear (the subject's
  right/left) — all in input pixels relative to the anchor centre; the score is a logit
  (clipped to +-100, then a sigmoid);
* overlapping detections are merged by weighted non-maximum suppression (IoU > 0.3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from digihuman.face import models

# keypoint order of the BlazeFace output
KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH, KP_RIGHT_EAR, KP_LEFT_EAR = range(6)


@dataclass(frozen=True)
class Detection:
    """A detected face in image pixel coordinates (pixel centres at integer coordinates)."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2) see KP_*
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


def ssd_anchors(input_size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1]: for each stride group, ``per_cell`` anchors per cell,
    row-major over the feature map (the order of the model's outputs)."""
    out = []
    for stride, n in zip(strides, per_cell, strict=True):
        fm = input_size // stride
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        centres = np.stack([(xs + 0.5) / fm, (ys + 0.5) / fm], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, n, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class _Spec:
    file: str
    size: int
    strides: tuple[int, ...]
    per_cell: tuple[int, ...]
    min_score: float


# 4 layers with strides (8, 16, 16, 16): stride 8 layer gives 2 anchors per cell, the three
# stride-16 layers are merged into one grid with 2 * 3 = 6 anchors per cell.
SHORT = _Spec(models.SHORT_RANGE, 128, (8, 16), (2, 6), 0.5)
FULL = _Spec(models.FULL_RANGE, 192, (4,), (1,), 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with boxes ``b`` (N, 4)."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a + area_b - inter, 1e-9))


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.3
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe-style weighted NMS: each cluster of boxes overlapping the best remaining one
    by more than ``threshold`` IoU is replaced by its score-weighted mean (keeping the best
    score)."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = iou(boxes[i], boxes) > threshold
        members = overlap & alive
        members[i] = True
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        alive &= ~members
    return out


class BlazeFace:
    """One BlazeFace model: ``detect(image)`` -> detections in image pixels."""

    def __init__(
        self,
        spec: _Spec,
        *,
        models_dir: str | os.PathLike[str] | None = None,
        num_threads: int = 1,
    ) -> None:
        self.spec = spec
        self._interp: Any = models.load_interpreter(
            models.model_path(spec.file, models_dir), num_threads
        )
        self._input = self._interp.get_input_details()[0]["index"]
        outs = self._interp.get_output_details()
        # regressors have 16 values per anchor, classificators 1
        by_width = {int(o["shape"][-1]): o["index"] for o in outs}
        self._reg, self._cls = by_width[16], by_width[1]
        self.anchors = ssd_anchors(spec.size, spec.strides, spec.per_cell)
        n = int(outs[0]["shape"][1])
        if len(self.anchors) != n:
            raise RuntimeError(f"{spec.file}: {n} outputs but {len(self.anchors)} anchors")

    def detect(self, image: np.ndarray, min_score: float | None = None) -> list[Detection]:
        size = self.spec.size
        h, w = image.shape[:2]
        scale = size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(image, (nw, nh), interpolation=interp)
        ox, oy = (size - nw) // 2, (size - nh) // 2
        canvas = np.zeros((size, size, 3), np.float32) - 1.0
        canvas[oy : oy + nh, ox : ox + nw] = small.astype(np.float32) / 127.5 - 1.0
        self._interp.set_tensor(self._input, canvas[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._reg)[0].reshape(-1, 8, 2) / size
        logits = self._interp.get_tensor(self._cls)[0, :, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100.0, 100.0)))
        thresh = self.spec.min_score if min_score is None else min_score
        keep = scores >= thresh
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        centre = raw[:, 0] + anchors
        half = np.abs(raw[:, 1]) / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)  # x0 y0 x1 y1 (unit)
        kps = raw[:, 2:] + anchors[:, None, :]
        dets = []
        # unit square of the letterboxed input -> image pixel centres
        fx, fy = w / nw, h / nh
        for box, kp, score in weighted_nms(boxes, kps, scores):
            bx = np.array(
                [
                    (box[0] * size - ox) * fx - 0.5,
                    (box[1] * size - oy) * fy - 0.5,
                    (box[2] * size - ox) * fx - 0.5,
                    (box[3] * size - oy) * fy - 0.5,
                ],
                np.float32,
            )
            kx = (kp[:, 0] * size - ox) * fx - 0.5
            ky = (kp[:, 1] * size - oy) * fy - 0.5
            dets.append(Detection(bx, np.stack([kx, ky], 1).astype(np.float32), score))
        return dets
