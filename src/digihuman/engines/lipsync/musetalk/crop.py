"""MuseTalk's face crop box from 68 landmarks, without mmpose.

The official preprocessing (``musetalk/utils/preprocessing.py``) takes DWPose's 68 face
keypoints (iBUG 300-W order, 0-based) and builds the box

* ``x0 = min(x)``, ``x1 = max(x)``, ``y1 = max(y)`` over the 68 points (cast to int32);
* ``cy = y[29] + bbox_shift`` (point 29: the nose bridge, just above the tip);
* ``y0 = max(0, cy - (y1 - cy))`` — the box's upper edge mirrors the chin about ``cy``;
* an empty box or ``x0 < 0`` falls back to the face detector's box.

v1.5 adds ``extra_margin`` pixels below the chin (``y1 = min(y1 + extra_margin, height)``) and
ignores ``bbox_shift``. We take the 68 points from :func:`digihuman.face.geometry.to_68` (the
MediaPipe mesh mapped onto the 300-W definition) instead of DWPose; docs/musetalk.md records the
mapping and how far the boxes are from DWPose's.

``bbox_shift`` moves ``cy`` down (positive: more mouth opening) or up (negative); its useful
range is ``[-(y[30] - y[29]), y[29] - y[28]]`` averaged over the frames (what the official
script prints), see :func:`bbox_shift_range`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[int, int, int, int]


def crop_box(
    lm68: np.ndarray,
    bbox_shift: int = 0,
    *,
    fallback: Box | None = None,
    version: str = "v1",
    extra_margin: int = 10,
    height: int | None = None,
) -> Box | None:
    """The (x0, y0, x1, y1) crop box of one frame; ``fallback`` (or None) when degenerate.

    ``lm68``: (68, 2) image pixel coordinates (x, y) in the 300-W order.
    """
    lm = np.asarray(lm68, dtype=np.float64).astype(np.int32)  # as the official astype(int32)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    shift = 0 if version == "v15" else int(bbox_shift)
    if shift:
        lm[29, 1] += shift  # the official code shifts point 29 in place (it then counts in max)
    cy = int(lm[29, 1])
    y1 = int(lm[:, 1].max())
    y0 = max(0, cy - (y1 - cy))
    box = (int(lm[:, 0].min()), int(y0), int(lm[:, 0].max()), y1)
    x0, yy0, x1, yy1 = box
    box_or = fallback if (yy1 - yy0 <= 0 or x1 - x0 <= 0 or x0 < 0) else box
    if box_or is None:
        return None
    if version == "v15":
        bx0, by0, bx1, by1 = box_or
        by1 = by1 + int(extra_margin)
        if height is not None:
            by1 = min(by1, int(height))
        box_or = (bx0, by0, bx1, by1)
    return box_or


def bbox_shift_range(lm68s: Sequence[np.ndarray]) -> tuple[int, int]:
    """The official 'Manually adjust range' ``(-down, up)`` of ``bbox_shift`` for these frames."""
    if not lm68s:
        return (0, 0)
    lms = [np.asarray(lm, np.float64).astype(np.int32) for lm in lm68s]
    minus = [int(lm[30, 1] - lm[29, 1]) for lm in lms]
    plus = [int(lm[29, 1] - lm[28, 1]) for lm in lms]
    return (-int(sum(minus) / len(minus)), int(sum(plus) / len(plus)))
