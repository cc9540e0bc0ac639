"""Expression feedback end to end: real API and worker processes, a real Redis (per module),
SQLite and PostgreSQL, real videos (the bundled smiling portrait, a talking video rendered by
the project with the lite engine, a video without a face, a corrupt and a truncated file, one
fetched over HTTP), and a worker SIGKILLed mid-analysis."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from dbfixtures import database_url

from digihuman.media.video import read_image, write_video
from digihuman.rooms.db import open_database
from digihuman.rooms.feedback import FeedbackStore

ASSETS = Path(__file__).resolve().parents[2] / "src" / "digihuman" / "assets"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path / "db")


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from database_url("postgresql", tmp_path)


def _sway(img: np.ndarray, n: int) -> Iterator[np.ndarray]:
    h, w = img.shape[:2]
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 3 * np.sin(i / 10), 1.0)
        yield cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _make_videos(tests: Path) -> None:
    """The answer videos, written where the API finds them (data-root paths tests/...)."""
    tests.mkdir(parents=True, exist_ok=True)
    portrait = read_image(ASSETS / "portrait.jpg")
    write_video(tests / "smile.mp4", _sway(portrait, 100), 25)
    rng = np.random.default_rng(1)
    noise = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (0, 0), 8)]
    write_video(tests / "noface.mp4", (noise[0] for _ in range(50)), 25)
    write_video(tests / "long.mp4", _sway(portrait, 250), 25)
    data = (tests / "long.mp4").read_bytes()
    (tests / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    (tests / "corrupt.mp4").write_bytes(os.urandom(40_000))


def _render_talking(out: Path) -> None:
    """A talking video rendered by the project: `digihuman render` with the lite engine."""
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "digihuman",
            "render",
            "--avatar",
            str(ASSETS / "portrait.jpg"),
            "--audio",
            str(ASSETS / "speech_en.wav"),
            "-o",
            str(out),
            "-q",
        ],
        check=True,
        timeout=120,
    )


def _wait_rows(
    c: httpx.Client, ms_id: str, n: int, timeout: float = 120.0
) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        r = c.get(f"/v1/feedback/{ms_id}")
        if r.status_code == 200:
            rows = {a["index"]: a for a in r.json()["answers"]}
            if len(rows) >= n and all(a["status"] in ("done", "failed") for a in rows.values()):
                return rows
        time.sleep(0.2)
    raise AssertionError(f"feedback not final after {timeout} s: {rows}")


@pytest.mark.timeout(300)
def test_bqfk_end_to_end_real_videos(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    root = tmp_path / "root"
    _make_videos(root / "tests")
    _render_talking(root / "tests" / "talking.mp4")
    env = helpers.service_env(
        redis_url,
        root,
        DIGIHUMAN_JOBS__KINDS='["bqfk"]',
        # loopback allowed on purpose here: the test serves a video over HTTP itself
        DIGIHUMAN_API__URL_ALLOWLIST='["127.0.0.1"]',
        DIGIHUMAN_API__ALLOW_PRIVATE_URLS="true",
    )
    procs.worker("bqfk", env)
    api = procs.api(env)
    helpers.wait_ready(redis_url, "bqfk", timeout=60)
    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root / "tests")),
    )
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    c = httpx.Client(base_url=api, timeout=30)
    try:
        # the seed's contract: {"message": "success"} at once, the analysis queued
        sources = {
            0: "tests/smile.mp4",
            1: "tests/talking.mp4",
            2: "tests/noface.mp4",
            3: "tests/corrupt.mp4",
            4: "tests/truncated.mp4",
            5: f"http://127.0.0.1:{port}/smile.mp4",  # fetched by the worker
        }
        for index, url in sources.items():
            t0 = time.monotonic()
            r = c.get("/bqfk", params={"url": url, "msId": "interview-7", "index": index})
            assert r.status_code == 200 and r.json() == {"message": "success"}, r.text
            assert time.monotonic() - t0 < 5.0  # at once: no analysis in the request
        rows = _wait_rows(c, "interview-7", len(sources))
        smile, talking, noface = rows[0], rows[1], rows[2]
        for a in (smile, talking, noface, rows[5]):
            assert a["status"] == "done", a
        # the smiling portrait reads as happy, facing the camera
        assert smile["face_visible"] == 1.0
        assert smile["dominant_expressions"][0]["label"] == "happy"
        assert smile["looking_at_camera"] >= 0.9
        assert smile["smile"] > 0.7 and smile["frames"] == 8 and len(smile["timeline"]) == 8
        assert rows[5]["dominant_expressions"] == smile["dominant_expressions"]  # over HTTP
        # the rendered talking head: a face throughout, the lite engine's blinks are seen
        assert talking["face_visible"] == 1.0 and talking["looking_at_camera"] >= 0.9
        assert talking["blinks"] >= 2 and talking["blinks_per_minute"] > 5
        assert talking["head_movement"]["level"] in ("low", "moderate")
        assert talking["duration_s"] == pytest.approx(10.6, abs=0.2)
        # no face: face_visible 0, not a crash
        assert noface["face_visible"] == 0.0 and noface["dominant_expressions"] == []
        # corrupt and truncated: the job fails with the reason, recorded in the job and here
        for i, what in ((3, "corrupt or not a video"), (4, "truncated")):
            assert rows[i]["status"] == "failed" and what in rows[i]["error"], rows[i]
            job = c.get(f"/v1/jobs/{rows[i]['job_id']}").json()
            assert job["status"] == "failed" and what in job["error"], job
        # the chart
        r = c.get("/v1/feedback/interview-7/chart.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 1000 and img.std() > 10  # 6 rows of panels
        r = c.get("/v1/feedback/interview-7/chart.png", params={"index": 1})
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
        # the service stays usable after the failures: a re-analysis replaces a result
        r = c.get("/bqfk", params={"url": "tests/smile.mp4", "msId": "interview-7", "index": 3})
        assert r.status_code == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            a = {x["index"]: x for x in c.get("/v1/feedback/interview-7").json()["answers"]}[3]
            if a["status"] == "done":
                break
            time.sleep(0.2)
        assert a["status"] == "done" and a["error"] is None and a["face_visible"] == 1.0
        # the typed API: POST /v1/bqfk answers 202 with the job
        r = c.post("/v1/bqfk", json={"url": "tests/noface.mp4", "msId": "v1-m", "index": 0})
        assert r.status_code == 202 and r.json()["feedback"] == "/v1/feedback/v1-m", r.text
        job = c.get(f"/v1/jobs/{r.json()['id']}", params={"wait": 60}).json()
        assert job["status"] == "done" and job["result"]["face_visible"] == 0.0, job
        assert _wait_rows(c, "v1-m", 1)[0]["face_visible"] == 0.0
        r = c.post("/v1/bqfk", json={"url": "tests/noface.mp4", "msId": "a/b", "index": 0})
        assert r.status_code == 422 and r.json()["message"]

        # bad parameters: JSON 4xx with a reason, nothing queued
        bad = [
            ({"url": "tests/smile.mp4", "index": 0}, 422),  # no msId
            ({"url": "tests/smile.mp4", "msId": "m", "index": "x"}, 422),
            ({"url": "tests/smile.mp4", "msId": "a b/../c", "index": 0}, 422),
            ({"url": "tests/smile.mp4", "msId": "m", "index": 5000}, 422),
            ({"url": "tests/missing.mp4", "msId": "m", "index": 0}, 404),
            ({"url": "../etc/passwd", "msId": "m", "index": 0}, 400),
            ({"url": "http://example.invalid/a.mp4", "msId": "m", "index": 0}, 400),
        ]
        for params, status in bad:
            r = c.get("/bqfk", params=params)
            assert r.status_code == status, (params, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["message"] and "Traceback" not in r.text
        assert c.get("/v1/feedback/m").status_code == 404
        r = c.get("/v1/feedback/nobody/chart.png")
        assert r.status_code == 404 and r.json()["message"]
    finally:
        srv.shutdown()
        c.close()


def test_store_on_both_databases(db_url: str) -> None:
    store = FeedbackStore(open_database(db_url))
    try:
        assert store.list("m1") == []
        store.queue("m1", 0, job_id="a", source="tests/x.mp4")
        assert store.get("m1", 0).status == "queued"  # type: ignore[union-attr]
        store.start("m1", 0, job_id="a", source="tests/x.mp4")
        store.queue("m1", 0, job_id="b", source="tests/y.mp4")  # a newer request takes the row
        assert store.finish("m1", 0, job_id="a", data={"face_visible": 1.0}) is None
        store.start("m1", 0, job_id="b", source="tests/y.mp4")
        done = store.finish("m1", 0, job_id="b", data={"face_visible": 0.5, "timeline": [1]})
        assert done is not None and done.status == "done"
        store.fail("m1", 1, job_id="c", error="the video is truncated")
        rows = store.list("m1")
        assert [(r.index, r.status) for r in rows] == [(0, "done"), (1, "failed")]
        assert rows[0].data == {"face_visible": 0.5, "timeline": [1]}
        assert rows[0].source == "tests/y.mp4" and rows[1].error == "the video is truncated"
        assert rows[0].to_dict()["face_visible"] == 0.5 and rows[0].to_dict()["msId"] == "m1"
    finally:
        store.close()


@pytest.mark.timeout(300)
def test_worker_killed_mid_analysis_loses_nothing(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any, pg_url: str
) -> None:
    """SIGKILL the worker while it analyses; another takes the job over; the result is stored
    once (one row, every frame counted once), here on PostgreSQL."""
    root = tmp_path / "root"
    (root / "tests").mkdir(parents=True)
    portrait = cv2.resize(read_image(ASSETS / "portrait.jpg"), (256, 256))
    write_video(root / "tests" / "long.mp4", _sway(portrait, 900), 10)  # 90 s at 10 fps
    env = helpers.service_env(
        redis_url,
        root,
        DIGIHUMAN_JOBS__KINDS='["bqfk"]',
        DIGIHUMAN_DATABASE_URL=pg_url,
        DIGIHUMAN_EXPRESSION__SAMPLE_FPS="10",  # every frame: a long analysis to kill
        DIGIHUMAN_EXPRESSION__EYE_FPS="0",
    )
    first = procs.worker("bqfk", env)
    api = procs.api(env)
    helpers.wait_ready(redis_url, "bqfk", timeout=60)
    c = httpx.Client(base_url=api, timeout=30)
    store = FeedbackStore(open_database(pg_url))
    try:
        r = c.get("/bqfk", params={"url": "tests/long.mp4", "msId": "kill-1", "index": 2})
        assert r.status_code == 200 and r.json() == {"message": "success"}
        job_id = store.get("kill-1", 2).job_id  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["progress"] >= 0.05:
                break
            time.sleep(0.05)
        assert job["status"] == "running", job
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        row = store.get("kill-1", 2)
        assert row is not None and row.status == "running"  # killed mid-analysis
        procs.worker("bqfk", env)  # a replacement takes the job over
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("done", "failed", "dead"):
                break
            time.sleep(0.2)
        assert job["status"] == "done" and job["attempts"] == 2, job
        rows = c.get("/v1/feedback/kill-1").json()["answers"]
        assert len(rows) == 1
        (a,) = rows
        assert a["status"] == "done" and a["job_id"] == job_id and a["index"] == 2
        assert a["frames"] == 900 and len(a["timeline"]) == 900  # every frame, once
        assert a["face_visible"] == 1.0
    finally:
        c.close()
        store.close()
