"""MuseTalk crop box: our MediaPipe-mesh -> iBUG-68 mapping vs dlib's 68-point predictor.

Run: .venv/bin/python bench/crop_box.py [--quick] [--bbox-shift N]
Needs the ``bench`` extra (dlib-bin + face-recognition-models) and scikit-image (``dev``).

The official MuseTalk v1.0 box is computed from DWPose's 68 face keypoints (iBUG 300-W
definition). DWPose weights are not available here; dlib's 68-point shape predictor, trained on
iBUG 300-W, stands in for the official definition. For every photo and variant (rotated
+-15 degrees, scaled 0.5x, mirrored) this prints:

* IoU of our box (``crop.crop_box`` on ``geometry.to_68``) with the official formula applied to
  dlib's points (written out plainly below, same ``bbox_shift``);
* |dx0| |dy0| |dx1| |dy1| in pixels and as % of the official box's width / height;
* NME: mean point distance between ``to_68`` and dlib over the 68 points, normalised by the
  inter-ocular distance (outer eye corners 36-45, the 300-W convention), also for the jaw
  (0-16) and for the inner points (17-67) separately;
* the ``bbox_shift`` range the official script prints, from our points and from dlib's.

Photos: skimage's astronaut (NASA, public domain) and camera (the cameraman, no copyright
restrictions), plus tests/data/faces/*.jpg (see the README there). A summary row gives means.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from digihuman.engines.lipsync.musetalk import crop
from digihuman.errors import missing_extra
from digihuman.face import FaceAnalyzer
from digihuman.face import geometry as g
from digihuman.types import FaceBox

FACES_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"
Box = tuple[int, int, int, int]


def load_dlib() -> tuple[Any, Any, Any] | None:
    """(dlib module, frontal detector, 68-point predictor), or None with a message printed."""
    try:
        import dlib
    except ImportError:
        print(f"crop_box bench: {missing_extra('dlib (dlib-bin)', 'bench')}", file=sys.stderr)
        return None
    # face_recognition_models' __init__ imports pkg_resources (not always installed):
    # locate its data files without importing the package.
    spec = importlib.util.find_spec("face_recognition_models")
    dirs = list(spec.submodule_search_locations or []) if spec else []
    model = Path(dirs[0]) / "models" / "shape_predictor_68_face_landmarks.dat" if dirs else None
    if model is None or not model.is_file():
        print(
            f"crop_box bench: {missing_extra('face-recognition-models', 'bench')}",
            file=sys.stderr,
        )
        return None
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))


def official_box(lm68: np.ndarray, bbox_shift: int) -> Box:
    """MuseTalk v1.0 ``get_landmark_and_bbox`` box, written plainly (no clamping of y0)."""
    lm = np.asarray(lm68).astype(np.int32).copy()
    lm[29, 1] += bbox_shift  # in place in the official code: the shifted point counts in max
    half = lm[:, 1].max() - lm[29, 1]
    return (int(lm[:, 0].min()), int(lm[29, 1] - half), int(lm[:, 0].max()), int(lm[:, 1].max()))


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nme(ours: np.ndarray, ref: np.ndarray, idx: slice | None = None) -> float:
    d = float(np.linalg.norm(ref[36] - ref[45]))
    sel = slice(None) if idx is None else idx
    return float(np.linalg.norm(ours[sel] - ref[sel], axis=1).mean()) / d


# ----------------------------------------------------------------------------- photos


def photos(quick: bool) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    out = [
        ("astronaut", np.ascontiguousarray(data.astronaut())),
        ("camera", np.ascontiguousarray(cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2RGB))),
    ]
    for p in sorted(FACES_DIR.glob("*.jpg")):
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None:
            out.append((p.stem, np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
    return out


def rotate(img: np.ndarray, deg: float) -> np.ndarray:
    """Rotated about the centre on a canvas large enough to keep the whole image (black)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = round(w * c + h * s), round(w * s + h * c)
    m[0, 2] += (nw - w) / 2
    m[1, 2] += (nh - h) / 2
    return cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def variants(img: np.ndarray, quick: bool) -> list[tuple[str, np.ndarray]]:
    out = [("orig", img), ("mirror", np.ascontiguousarray(img[:, ::-1]))]
    if quick:
        return out
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return [*out, ("rot+15", rotate(img, 15)), ("rot-15", rotate(img, -15)), ("x0.5", small)]


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Row:
    photo: str
    variant: str
    det: str  # which rectangle dlib's predictor started from
    iou: float
    d: tuple[int, int, int, int]  # |dx0| |dy0| |dx1| |dy1| px
    dpct: tuple[float, float, float, float]  # % of the official box's width/height
    nme: float
    nme_jaw: float
    nme_inner: float
    range_ours: tuple[int, int]
    range_dlib: tuple[int, int]
    box_ours: Box
    box_off: Box
    formula_ok: bool  # crop.crop_box on dlib points == the plain official formula
    ours: np.ndarray  # (68, 2) to_68
    ref: np.ndarray  # (68, 2) dlib
    width: int  # image width (to undo the mirror)


def dlib_points(dl: tuple[Any, Any, Any], img: np.ndarray, face: FaceBox) -> tuple[np.ndarray, str]:
    dlib, detector, predictor = dl
    dets = list(detector(img, 1))
    ours: Box = (round(face.x0), round(face.y0), round(face.x1), round(face.y1))
    best, best_iou = None, 0.0
    for r in dets:
        v = iou((r.left(), r.top(), r.right(), r.bottom()), ours)
        if v > best_iou:
            best, best_iou = r, v
    det = "dlib"
    if best is None:  # dlib's HOG detector missed: start from our face box
        best = dlib.rectangle(*ours)
        det = "ours"
    shape = predictor(img, best)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64), det


def measure(
    fa: FaceAnalyzer, dl: tuple[Any, Any, Any], name: str, var: str, img: np.ndarray, shift: int
) -> Row | None:
    try:
        lm = fa.analyze(img)
    except Exception as e:  # a photo without a face found is left out (and said)
        print(f"{name}/{var}: our face module found no face ({e})", file=sys.stderr)
        return None
    ours = g.to_68(lm).astype(np.float64)
    ref, det = dlib_points(dl, img, lm.box)
    fb = (int(lm.box.x0), int(lm.box.y0), int(lm.box.x1), int(lm.box.y1))
    b_ours = crop.crop_box(ours, shift, fallback=fb)
    b_off = official_box(ref, shift)
    assert b_ours is not None
    d = tuple(abs(a - b) for a, b in zip(b_ours, b_off, strict=True))
    bw, bh = max(1, b_off[2] - b_off[0]), max(1, b_off[3] - b_off[1])
    dpct = (100 * d[0] / bw, 100 * d[1] / bh, 100 * d[2] / bw, 100 * d[3] / bh)
    via_crop = crop.crop_box(ref, shift, fallback=None)
    return Row(
        name,
        var,
        det,
        iou(b_ours, b_off),
        d,
        dpct,
        nme(ours, ref),
        nme(ours, ref, slice(0, 17)),
        nme(ours, ref, slice(17, 68)),
        crop.bbox_shift_range([ours]),
        crop.bbox_shift_range([ref]),
        b_ours,
        b_off,
        via_crop == b_off,
        ours,
        ref,
        img.shape[1],
    )


def fmt_rng(r: tuple[int, int]) -> str:
    return f"[{r[0]}, {r[1]}]"


def mean_row(label: str, rows: list[Row]) -> str:
    n = len(rows)
    md = [sum(r.d[i] for r in rows) / n for i in range(4)]
    mp = [sum(r.dpct[i] for r in rows) / n for i in range(4)]
    ds = " | ".join(f"{p:.1f} ({q:.1f}%)" for p, q in zip(md, mp, strict=True))
    ro = [sum(r.range_ours[i] for r in rows) / n for i in range(2)]
    rd = [sum(r.range_dlib[i] for r in rows) / n for i in range(2)]
    return (
        f"| **{label} ({n})** | | | {sum(r.iou for r in rows) / n:.3f} | {ds} "
        f"| {sum(r.nme for r in rows) / n:.3f} | {sum(r.nme_jaw for r in rows) / n:.3f} "
        f"| {sum(r.nme_inner for r in rows) / n:.3f} | [{ro[0]:.1f}, {ro[1]:.1f}] "
        f"| [{rd[0]:.1f}, {rd[1]:.1f}] |"
    )


def table(rows: list[Row]) -> str:
    head = (
        "| photo | variant | dlib rect | IoU | abs dx0 | abs dy0 | abs dx1 | abs dy1 "
        "| NME | NME jaw | NME 17-67 | range ours | range dlib |"
    )
    lines = [head, "|" + " --- |" * 13]
    for r in rows:
        ds = " | ".join(f"{p} ({q:.1f}%)" for p, q in zip(r.d, r.dpct, strict=True))
        lines.append(
            f"| {r.photo} | {r.variant} | {r.det} | {r.iou:.3f} | {ds} | {r.nme:.3f} "
            f"| {r.nme_jaw:.3f} | {r.nme_inner:.3f} | {fmt_rng(r.range_ours)} "
            f"| {fmt_rng(r.range_dlib)} |"
        )
    frontal = [r for r in rows if r.det == "dlib"]
    for label, sel in (("mean, dlib detected", frontal), ("mean, all", rows)):
        if sel:
            lines.append(mean_row(label, sel))
    return "\n".join(lines)


def signed_means(rows: list[Row]) -> list[str]:
    """Where the difference comes from: mean signed offsets (ours - official) as % of the
    official box's width / height, over the rows where dlib's own detector found the face."""
    sel = [r for r in rows if r.det == "dlib"]
    if not sel:
        return []

    def pct(vals: list[float], sizes: list[int]) -> str:
        return f"{np.mean([100 * v / max(1, z) for v, z in zip(vals, sizes, strict=True)]):+.1f}%"

    ws = [r.box_off[2] - r.box_off[0] for r in sel]
    hs = [r.box_off[3] - r.box_off[1] for r in sel]
    edges = ", ".join(
        f"{k} {pct([r.box_ours[i] - r.box_off[i] for r in sel], ws if i % 2 == 0 else hs)}"
        for i, k in enumerate(("x0", "y0", "x1", "y1"))
    )
    pts = ", ".join(
        f"{k} {pct([float(r.ours[i, 1] - r.ref[i, 1]) for r in sel], hs)}"
        for k, i in (("y28", 28), ("y29", 29), ("y30", 30), ("y8 (chin)", 8))
    )
    ext = ", ".join(
        f"{k} {pct([float(f(r.ours[:, 0]) - f(r.ref[:, 0])) for r in sel], ws)}"
        for k, f in (("min x", np.min), ("max x", np.max))
    )
    return [
        f"mean signed offsets ours - official over the {len(sel)} dlib-detected rows "
        "(% of the official box width/height):",
        f"  box edges: {edges}",
        f"  points: {pts}; {ext}",
    ]


# 68-point index of each point's mirror image (the subject's right <-> left)
MIRROR68 = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)  # fmt: skip


def unmirror(points: np.ndarray, width: int) -> np.ndarray:
    """68 points found on the mirrored image, mapped back onto the original."""
    out = points[MIRROR68].copy()
    out[:, 0] = width - 1 - out[:, 0]
    return out


def mirror_floor(rows: list[Row], shift: int) -> list[str]:
    """Each method against itself: the original vs the mirrored photo (mapped back). The
    official box's own IoU here is the floor below which our-vs-official numbers mean little."""
    by = {(r.photo, r.variant): r for r in rows}
    out = []
    for (photo, var), r in by.items():
        m = by.get((photo, "mirror"))
        if var != "orig" or m is None or r.det != "dlib" or m.det != "dlib":
            continue
        ref_m, ours_m = unmirror(m.ref, m.width), unmirror(m.ours, m.width)
        off_iou = iou(official_box(r.ref, shift), official_box(ref_m, shift))
        ours_iou = iou(r.box_ours, crop.crop_box(ours_m, shift) or (0, 0, 0, 0))
        out.append(
            f"| {photo} | {off_iou:.3f} | {nme(ref_m, r.ref):.3f} | {ours_iou:.3f} "
            f"| {nme(ours_m, r.ours):.3f} |"
        )
    if not out:
        return []
    head = [
        "mirror consistency (original vs mirrored photo mapped back, each method against itself):",
        "",
        "| photo | official box IoU | dlib NME | our box IoU | our NME |",
        "| --- | --- | --- | --- | --- |",
    ]
    return head + out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="originals and mirrors only")
    ap.add_argument("--bbox-shift", type=int, default=0, help="bbox_shift for both boxes")
    args = ap.parse_args()
    if importlib.util.find_spec("skimage") is None:
        print(f"crop_box bench: {missing_extra('scikit-image', 'dev')}", file=sys.stderr)
        return 2
    dl = load_dlib()
    if dl is None:
        return 2
    fa = FaceAnalyzer()
    t0 = time.perf_counter()
    rows: list[Row] = []
    for name, img in photos(args.quick):
        for var, im in variants(img, args.quick):
            r = measure(fa, dl, name, var, np.ascontiguousarray(im), args.bbox_shift)
            if r is not None:
                rows.append(r)
    print(f"MuseTalk v1.0 crop box, bbox_shift={args.bbox_shift}: ours (crop.crop_box on ")
    print("geometry.to_68) vs the official formula on dlib's 68 points (iBUG 300-W)\n")
    print(table(rows))
    print()
    for line in signed_means(rows):
        print(line)
    print()
    for line in mirror_floor(rows, args.bbox_shift):
        print(line)
    print()
    bad = [f"{r.photo}/{r.variant}" for r in rows if not r.formula_ok]
    print(
        "crop.crop_box == the plain official formula on dlib's points: "
        + ("all rows" if not bad else "differs on " + ", ".join(bad))
    )
    print(f"({len(rows)} images, {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
