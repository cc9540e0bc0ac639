"""FaceAnalyzer: detection, 468-point landmarks and video tracking with the MediaPipe models."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from digihuman.errors import InputError, NoFaceError
from digihuman.face import detector as det_mod
from digihuman.face import models
from digihuman.face.detector import BlazeFace, Detection, iou, weighted_nms
from digihuman.face.landmarks import (
    FaceMesh,
    MeshResult,
    Roi,
    roi_from_detection,
    roi_from_points,
)
from digihuman.face.tracking import OneEuroFilter
from digihuman.types import FaceBox, Landmarks

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    return None


# The full-range model finds faces down to ~7% of its input's side, so tiles of side T find
# faces from ~0.07 T to T / 2 (a face up to T / 2 lies whole inside one of the half-overlapping
# tiles). Looking for every face searches half-size tiles and then smaller ones down to
# MIN_TILE (faces from ~36 px, or ~3.5% of a small image's side); when nothing at all
# was found, down to LAST_RESORT_TILE or 1/8 of the image side (faces from ~18 px or 1/100
# of the image side).
MIN_TILE = 512
LAST_RESORT_TILE = 256
REFINE_STEPS = 6  # at most this many re-landmarking passes for a new face
REDETECT_EVERY = 5  # frames between searches while a tracked face is lost

NO_FACE_HINT = "use a photo where one face is clearly visible, at least ~64 px wide"


@dataclass(frozen=True)
class _Face:
    mesh: MeshResult
    score: float  # detector score

    @property
    def box(self) -> FaceBox:
        p = self.mesh.points
        return FaceBox(
            float(p[:, 0].min()),
            float(p[:, 1].min()),
            float(p[:, 0].max()) + 1.0,
            float(p[:, 1].max()) + 1.0,
            self.score,
        )

    def landmarks(self) -> Landmarks:
        return Landmarks(points=self.mesh.points, box=self.box, z=self.mesh.z)


def _box_array(b: FaceBox) -> np.ndarray:
    return np.array([b.x0, b.y0, b.x1, b.y1], np.float64)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(
            f"images must be (H, W, 3) uint8 RGB, got shape {img.shape} {img.dtype}; "
            "read files with digihuman.media.video.read_image"
        )
    if min(img.shape[:2]) < 16:
        raise InputError(f"image is only {img.shape[1]}x{img.shape[0]} px; {NO_FACE_HINT}")
    return img


class FaceAnalyzer:
    """Face detection and dense landmarks with the MediaPipe tflite models.

    * :meth:`detect` finds faces (largest first) with both BlazeFace models (short and full
      range), falls back to a tiled search for small faces in large images, and keeps only
      candidates the landmark model confirms; boxes are the extent of the 468-point mesh.
    * :meth:`landmarks` / :meth:`analyze` give the 468 mesh points in image pixels
      (pixel centres at integer coordinates).
    * :meth:`track` follows one face through video frames: each frame's landmarks come from
      the previous frame's landmark region, re-detecting when the face is lost, smoothed
      with a One-Euro filter so a still head gives still landmarks.

    Models load once, at construction; one analyzer is not safe to share between threads.
    """

    def __init__(
        self,
        *,
        min_score: float = 0.5,
        min_presence: float = 0.5,
        num_threads: int | None = None,
        models_dir: str | os.PathLike[str] | None = None,
        smooth_min_cutoff: float = 0.5,
        smooth_beta: float = 8.0,
    ) -> None:
        threads = models.default_threads() if num_threads is None else num_threads
        self.min_score = min_score
        self.min_presence = min_presence
        self.smooth_min_cutoff = smooth_min_cutoff
        self.smooth_beta = smooth_beta
        self._short = BlazeFace(det_mod.SHORT, models_dir=models_dir, num_threads=threads)
        self._full = BlazeFace(det_mod.FULL, models_dir=models_dir, num_threads=threads)
        self._mesh = FaceMesh(models_dir=models_dir, num_threads=threads)

    # ------------------------------------------------------------------ detection

    def _candidates(self, image: np.ndarray, exhaustive: bool) -> list[Detection]:
        """Detections from both models on the whole image, then from overlapping tiles,
        coarse to fine, for faces too small for the whole-image pass (the full-range model
        needs a face >= ~7% of its input's side).

        Not ``exhaustive``: stop at the first pass that finds a face (it holds the largest).
        ``exhaustive``: search tiles down to MIN_TILE px. Either way, when nothing is found,
        keep going down to the last-resort tile size (see MIN_TILE).
        """
        found = self._short.detect(image, self.min_score) + self._full.detect(image, self.min_score)
        h, w = image.shape[:2]
        tile = max(h, w) // 2
        last_resort = max(LAST_RESORT_TILE, max(h, w) // 8)
        while tile >= last_resort:
            first_level = tile == max(h, w) // 2
            if found and (not exhaustive or (tile < MIN_TILE and not first_level)):
                break
            found += self._tiles(image, tile)
            tile //= 2
        if len(found) < 2:
            return found
        # one candidate per face: merge what several tiles and models found
        merged = weighted_nms(
            np.stack([d.box for d in found]),
            np.stack([d.keypoints for d in found]),
            np.array([d.score for d in found]),
        )
        return [Detection(b.astype(np.float32), k.astype(np.float32), s) for b, k, s in merged]

    def _tiles(self, image: np.ndarray, tile: int) -> list[Detection]:
        """Full-range detections on square tiles of side ``tile`` overlapping by half.

        The image is shrunk once so a tile becomes the model's input size, then cut."""
        h, w = image.shape[:2]
        size = self._full.spec.size
        scale = min(1.0, size / tile)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = image if scale == 1.0 else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        fx, fy = w / sw, h / sh
        t = min(size, tile)
        step = t // 2
        found: list[Detection] = []
        for y in range(0, max(1, sh - t + step), step):
            for x in range(0, max(1, sw - t + step), step):
                y0, x0 = min(y, max(0, sh - t)), min(x, max(0, sw - t))
                for d in self._full.detect(small[y0 : y0 + t, x0 : x0 + t], self.min_score):
                    # tile pixel centres -> small image -> original image pixel centres
                    kx = (d.keypoints[:, 0] + x0 + 0.5) * fx - 0.5
                    ky = (d.keypoints[:, 1] + y0 + 0.5) * fy - 0.5
                    box = np.array(
                        [
                            (d.box[0] + x0 + 0.5) * fx - 0.5,
                            (d.box[1] + y0 + 0.5) * fy - 0.5,
                            (d.box[2] + x0 + 0.5) * fx - 0.5,
                            (d.box[3] + y0 + 0.5) * fy - 0.5,
                        ],
                        np.float32,
                    )
                    found.append(Detection(box, np.stack([kx, ky], 1).astype(np.float32), d.score))
        return found

    def _verify(self, image: np.ndarray, roi: Roi, score: float) -> _Face | None:
        """Landmark ``roi``, then re-landmark from the mesh's own region until it settles
        (the state tracking continues from); None if the landmark model sees no face."""
        r = self._mesh.run(image, roi)
        for _ in range(REFINE_STEPS):
            if r.presence < self.min_presence:
                return None
            nxt = self._mesh.run(image, roi_from_points(r.points))
            moved = float(np.abs(nxt.points - r.points).mean())
            r = nxt
            if moved < 0.002 * r.roi.size:
                break
        if r.presence < self.min_presence:
            return None
        return _Face(r, score)

    def _faces(self, image: np.ndarray, exhaustive: bool = True) -> list[_Face]:
        faces: list[_Face] = []
        for d in sorted(self._candidates(image, exhaustive), key=lambda d: -d.score):
            cx, cy = d.center
            if any(f.box.x0 <= cx < f.box.x1 and f.box.y0 <= cy < f.box.y1 for f in faces):
                continue  # a piece of a face already found (e.g. by a tile that cut it)
            face = self._verify(image, roi_from_detection(d), d.score)
            if face is None:
                continue
            b = _box_array(face.box)
            if faces and (iou(b, np.stack([_box_array(f.box) for f in faces])) > 0.4).any():
                continue  # the same face found by another model or tile
            faces.append(face)
        faces.sort(key=lambda f: -f.box.area)
        return faces

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB image, largest first (boxes span the 468-point mesh)."""
        return [f.box for f in self._faces(_check_image(image))]

    # ------------------------------------------------------------------ landmarks

    def landmarks(self, image: np.ndarray, box: FaceBox) -> Landmarks:
        """468 landmarks for the face in ``box`` (e.g. from :meth:`detect`)."""
        img = _check_image(image)
        side = max(box.width, box.height) * 1.5
        roi = Roi((box.x0 + box.x1) / 2 - 0.5, (box.y0 + box.y1) / 2 - 0.5, side, 0.0)
        face = self._verify(img, roi, box.score)
        if face is None:
            raise NoFaceError(f"no face found in the given box; {NO_FACE_HINT}")
        return face.landmarks()

    def analyze(
        self, image: np.ndarray, face_index: int | None = None, *, name: str = "the image"
    ) -> Landmarks:
        """Landmarks of the largest face (or the ``face_index``-th largest)."""
        img = _check_image(image)
        # the largest face is found by the first pass that finds any; others need them all
        faces = self._faces(img, exhaustive=bool(face_index))
        return self._pick(faces, face_index, name).landmarks()

    @staticmethod
    def _pick(faces: list[_Face], face_index: int | None, name: str) -> _Face:
        if not faces:
            raise NoFaceError(f"no face found in {name}; {NO_FACE_HINT}")
        i = 0 if face_index is None else face_index
        if not 0 <= i < len(faces):
            raise InputError(
                f"face index {i} asked for but {name} has {len(faces)} face(s); "
                f"use a face index from 0 to {len(faces) - 1} (0 is the largest)"
            )
        return faces[i]

    # ------------------------------------------------------------------ video

    def track(
        self,
        frames: Iterable[np.ndarray],
        face_index: int | None = None,
        progress: Progress = _no_progress,
        *,
        fps: float = 25.0,
        smooth: bool = True,
        name: str = "the video",
    ) -> list[Landmarks]:
        """Landmarks for every frame, following one face (the largest in the first frame
        with a face, or the ``face_index``-th largest), smoothed over time unless ``smooth``
        is False (``fps`` sets the filter's time step).

        ``box.score`` is the detector's score on frames where the face was (re)detected, the
        landmark model's face presence on tracked frames, and 0 on frames where the face was
        lost: those reuse the nearest tracked frame's landmarks. Raises
        :class:`NoFaceError` when no frame has a face."""
        seq = frames if isinstance(frames, np.ndarray | list | tuple) else list(frames)
        n = len(seq)
        if n == 0:
            raise InputError(f"{name} has no frames; give a video or an image")
        filt = OneEuroFilter(fps, min_cutoff=self.smooth_min_cutoff, beta=self.smooth_beta)
        out: list[Landmarks | None] = [None] * n
        roi: Roi | None = None
        last_center: np.ndarray | None = None
        lost = 0
        lost_run = 0  # consecutive frames without the face
        redetections = 0
        for i, frame in enumerate(seq):
            img = _check_image(frame)
            r: MeshResult | None = None
            score = 0.0
            if roi is not None:
                # the last tracked region: follows a moving face, and picks a face that
                # was hidden for a while up again as soon as it is back in place
                r = self._mesh.run(img, roi)
                score = r.presence
                if r.presence < self.min_presence:
                    r = None
            if r is None and (last_center is None or lost_run % REDETECT_EVERY == 0):
                # the first face is chosen like analyze() does; a re-detection only needs
                # the face that was lost
                faces = self._faces(img, exhaustive=last_center is None and bool(face_index))
                if faces:
                    redetections += 1
                    if last_center is None:
                        face = self._pick(faces, face_index, name)
                    else:
                        lc = last_center
                        face = min(
                            faces,
                            key=lambda f: float(np.linalg.norm(f.mesh.points.mean(0) - lc)),
                        )
                    r, score = face.mesh, face.score
                    filt.reset()
            if r is None:
                lost += 1
                lost_run += 1
            else:
                lost_run = 0
                roi = roi_from_points(r.points)
                pts = r.points
                if smooth:
                    scale = _interocular(pts)
                    both = filt(np.concatenate([pts, r.z[:, None]], axis=1), scale)
                    pts = both[:, :2].astype(np.float32)
                    z = both[:, 2].astype(np.float32)
                else:
                    z = r.z
                last_center = pts.mean(0)
                box = _Face(MeshResult(pts, z, r.presence, r.roi), score).box
                out[i] = Landmarks(points=pts, box=box, z=z)
            progress((i + 1) / n, "tracking face")
        found = [i for i, lm in enumerate(out) if lm is not None]
        if not found:
            raise NoFaceError(f"no face found in any frame of {name}; {NO_FACE_HINT}")
        if lost:
            log.warning("%s: face lost in %d of %d frames (held)", name, lost, n)
        log.debug("%s: %d detections for %d frames", name, redetections, n)
        return _fill_gaps(out, found)


def _interocular(points: np.ndarray) -> float:
    from digihuman.face.geometry import interocular

    return max(interocular(points), 1.0)


def _fill_gaps(out: list[Landmarks | None], found: list[int]) -> list[Landmarks]:
    """Frames without a face take the nearest tracked frame's landmarks, score 0."""
    result: list[Landmarks] = []
    for i, lm in enumerate(out):
        if lm is not None:
            result.append(lm)
            continue
        j = min(found, key=lambda k: (abs(k - i), k))
        src = out[j]
        assert src is not None
        b = src.box
        result.append(
            Landmarks(
                points=src.points,
                box=FaceBox(b.x0, b.y0, b.x1, b.y1, 0.0),
                z=src.z,
            )
        )
    return result
