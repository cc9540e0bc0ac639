"""Answers against real processes: an API process (uvicorn), an ``answer`` worker running
whisper, a ``bqfk`` worker running the expression engine, a real Redis, and the rooms database
on SQLite and on PostgreSQL (every test that takes ``stack`` runs once per database).

The media are real: Mandarin speech made by the project's offline TTS (Kokoro, the default
``auto`` engine: 1 s of silence, "我在上一家公司负责后端开发。", 3 s of silence, "嗯，主要是那个订单
系统，就是说每天处理很多订单。", at 16 kHz: ``tests/data/answer_zh.wav``, made once and kept so
the test does not spend 10 s in TTS) and a talking video rendered by the project's own
``digihuman render`` from the bundled English speech. The refusals are real HTTP: a body over
the cap, declared and streamed; the wrong type; an upload cut off mid-way on a raw socket.
Nothing of a refused upload may stay on disk, in the database or in the queue.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from dbfixtures import database_url

ASSETS = Path(__file__).resolve().parents[2] / "src" / "digihuman" / "assets"
ANSWER_ZH = Path(__file__).resolve().parents[1] / "data" / "answer_zh.wav"
CAP = 40 * 1024 * 1024  # rooms.max_answer_bytes in these tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wav_bytes(x: np.ndarray, rate: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@dataclass
class Stack:
    api: str
    root: Path
    db_url: str
    redis: Any
    logs: Path


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, redis_proc: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"answers-{request.param}")
    gen = database_url(request.param, tmp)
    db_url = next(gen)
    root = tmp / "root"
    prefix = f"t{secrets.token_hex(3)}:"  # each stack its own keys on the module's Redis
    env = dict(os.environ)
    env.update(
        {
            "DIGIHUMAN_REDIS_URL": redis_proc.url,
            "DIGIHUMAN_REDIS__KEY_PREFIX": prefix,
            "DIGIHUMAN_DATA_DIR": str(root),
            "DIGIHUMAN_DATABASE_URL": db_url,
            "DIGIHUMAN_JOBS__HEARTBEAT_S": "0.5",
            "DIGIHUMAN_JOBS__BLOCK_MS": "200",
            "DIGIHUMAN_JOBS__SHUTDOWN_GRACE_S": "5",
            "DIGIHUMAN_LOG_LEVEL": "WARNING",
            "DIGIHUMAN_ROOMS__CLIPS": "false",  # no question clips: not what is tested here
            "DIGIHUMAN_ROOMS__MAX_ANSWER_BYTES": str(CAP),
            "DIGIHUMAN_ASR__ENGINE": "whisper",
            "DIGIHUMAN_ASR__CPU_THREADS": "2",
            "DIGIHUMAN_API__RATE_LIMIT_PER_MINUTE": "0",
            "DIGIHUMAN_API__MAX_AUDIO_SECONDS": "120",  # the throughput file is longer
        }
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: str) -> None:
        fh = open(tmp / log, "wb")  # noqa: SIM115  # closed with the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "digihuman", *args],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        )

    port = _free_port()
    start(["worker", "answer"], "worker-answer.log")
    start(["worker", "bqfk"], "worker-bqfk.log")
    start(["api", "--port", str(port)], "api.log")
    api = f"http://127.0.0.1:{port}"
    r = redis_proc.client()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            up = httpx.get(f"{api}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            up = False
        now = time.time()
        alive = all(r.zcount(f"{prefix}workers:{k}", now, "+inf") for k in ("answer", "bqfk"))
        if up and alive:
            break
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the API or the workers did not start; logs in {tmp}")
    if any(p.poll() is not None for p in procs):
        pytest.fail(f"a process died at start; logs in {tmp}")
    try:
        yield Stack(api, root, db_url, r, tmp)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for _ in gen:
            pass


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A talking video made by the project's render (lite engine, bundled portrait + speech)."""
    out = tmp_path_factory.getbasetemp() / "rooms-answer-video.mp4"  # one render a session
    if out.exists():
        return out.read_bytes()
    tmp = tmp_path_factory.mktemp("render")
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
        env={**os.environ, "DIGIHUMAN_DATA_DIR": str(tmp / "root")},
        timeout=120,
    )
    return out.read_bytes()


def new_room(st: Stack, count: int = 3, job: str = "Software Engineer") -> dict[str, Any]:
    r = httpx.get(
        f"{st.api}/create/zbjv2",
        params={"username": "Candidate", "job": job, "count": count},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    room = httpx.get(f"{st.api}/v1/rooms/{r.json()['zbjname']}", timeout=30).json()
    assert room["status"] == "ready"
    return room


def upload(st: Stack, z: str, index: int, name: str, data: bytes, ctype: str) -> httpx.Response:
    return httpx.post(
        f"{st.api}/v1/rooms/{z}/answers/{index}",
        files={"file": (name, io.BytesIO(data), ctype)},
        timeout=120,
    )


def wait_answer(st: Stack, z: str, index: int, timeout: float = 150.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{st.api}/v1/rooms/{z}/answers/{index}", timeout=30).json()
        if body.get("status") in ("done", "failed"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"answer {index} of {z} never finished: {body}; logs in {st.logs}")


def answer_files(st: Stack, z: str) -> list[str]:
    d = st.root / "tests" / "answers"
    return sorted(p.name for p in d.iterdir() if z in p.name) if d.is_dir() else []


def queued(st: Stack, z: str) -> list[str]:
    """The job records of the room's answers in Redis (their ids carry the room name)."""
    return list(st.redis.scan_iter(match=f"*job:{z}_*"))


# --------------------------------------------------------------------------------------------


def test_audio_and_video_answers_are_transcribed_measured_and_analysed(
    stack: Stack, video: bytes
) -> None:
    st = stack
    room = new_room(st, job="后端开发工程师")
    z = room["zbjname"]
    assert room["language"] == "zh"
    before = room["last_activity"]

    audio = ANSWER_ZH.read_bytes()
    r = upload(st, z, 0, "answer.wav", audio, "audio/wav")
    assert r.status_code == 202, r.text
    a0 = r.json()
    assert a0["media_type"] == "audio" and a0["bqfk_job"] is None and a0["bytes"] == len(audio)
    assert a0["media"].startswith("tests/answers/") and a0["media"].endswith(".wav")
    assert (st.root / a0["media"]).read_bytes() == audio  # stored byte for byte

    r = upload(st, z, 1, "answer.mp4", video, "video/mp4")
    assert r.status_code == 202, r.text
    a1 = r.json()
    assert a1["media_type"] == "video" and a1["bqfk_job"] and abs(a1["duration_s"] - 10.6) < 0.3

    room2 = httpx.get(f"{st.api}/v1/rooms/{z}", timeout=30).json()
    assert room2["last_activity"] > before  # an upload is activity: the room stays open
    assert room2["expires"] > room["expires"]
    assert {a["status"] for a in room2["answers"]} <= {"uploaded", "analysing", "done"}

    got0 = wait_answer(st, z, 0)
    assert got0["status"] == "done", got0
    tr = got0["transcript"]
    assert tr["language"] == "zh" and "订单" in tr["text"], tr["text"]
    assert tr["word_timings"] == "asr" and len(tr["words"]) >= 20
    starts = [w[0] for w in tr["words"]]
    assert starts == sorted(starts) and all(s <= e for s, e, _ in tr["words"])
    d = got0["delivery"]
    assert d["unit"] == "characters" and d["units"] >= 30
    assert 150 <= d["rate_per_min"] <= 330, d  # characters a minute
    # the spoken fillers (那个, 就是说) are counted; whisper writes the 嗯 as something else
    assert d["fillers"]["total"] >= 1 and set(d["fillers"]["items"]) <= {"那个", "就是说", "嗯"}
    assert d["pauses"]["count"] == 1 and 2.3 <= d["pauses"]["longest_s"] <= 3.6, d["pauses"]
    assert 0.3 <= d["pauses"]["lead_in_s"] <= 1.5  # the 1 s of silence in front
    suggested = room["questions"][0]["suggested_s"]
    assert d["length"]["suggested_s"] == suggested
    assert d["length"]["verdict"] == "short"  # ~11 s for a 60-120 s question
    assert got0["evaluation"] is None and got0["evaluation_error"] is None  # no LLM configured

    got1 = wait_answer(st, z, 1)
    assert got1["status"] == "done", got1
    assert got1["transcript"]["language"] == "en"
    assert "digital human" in got1["transcript"]["text"].lower()
    assert got1["delivery"]["unit"] == "words" and 100 <= got1["delivery"]["rate_per_min"] <= 260
    assert got1["delivery"]["pauses"]["count"] == 0  # the rendered speech has no long pause

    # the expression analysis of the video ran on the bqfk worker, keyed msId = zbjname
    deadline = time.monotonic() + 90
    fb: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = httpx.get(f"{st.api}/v1/feedback/{z}", timeout=30)
        if r.status_code == 200:
            fb = {a["index"]: a for a in r.json()["answers"]}
            if fb.get(1, {}).get("status") in ("done", "failed"):
                break
        time.sleep(0.3)
    assert fb[1]["status"] == "done", fb
    assert fb[1]["face_visible"] == 1.0 and 0 not in fb  # the audio answer has none


def test_refused_and_cut_off_uploads_keep_nothing(stack: Stack, video: bytes) -> None:
    st = stack
    z = new_room(st, count=2)["zbjname"]
    good = wav_bytes(np.zeros(15 * 16000, np.float32))  # valid, and silent: quick to analyse

    # an earlier good answer to question 1 must survive every failed re-upload below
    r = upload(st, z, 1, "first.wav", good, "audio/wav")
    assert r.status_code == 202
    kept = r.json()["media"]

    # wrong type: a text file, a "video" that is not one, a truncated MP4 (moov never arrives)
    r = upload(st, z, 0, "cv.txt", b"my CV\n" * 100, "text/plain")
    assert r.status_code == 415 and "audio or video" in r.json()["message"]
    r = upload(st, z, 0, "x.mp4", b"\x00" * 5000, "video/mp4")
    assert r.status_code == 415
    r = upload(st, z, 1, "cut.mp4", video[: len(video) // 3], "video/mp4")
    assert r.status_code == 415 and "truncated" in r.json()["message"], r.text
    r = httpx.post(
        f"{st.api}/v1/rooms/{z}/answers/0", content=good, headers={"content-type": "audio/wav"}
    )
    assert r.status_code == 415 and "multipart/form-data" in r.json()["message"]

    # over the cap: declared by Content-Length (refused before the body is read) ...
    r = upload(st, z, 0, "big.wav", good + b"\x00" * (CAP + 2 * 1024 * 1024), "audio/wav")
    assert r.status_code == 413 and "the limit is" in r.json()["message"], r.text

    # ... and streamed without a length (chunked): refused once the cap is passed
    def chunks() -> Iterator[bytes]:
        boundary = b"--B0undary\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="b.wav"\r\n'
        yield b"Content-Type: audio/wav\r\n\r\n" + good
        for _ in range(CAP // (1 << 20) + 2):
            yield b"\x00" * (1 << 20)
        yield b"\r\n--B0undary--\r\n"

    try:
        r = httpx.post(
            f"{st.api}/v1/rooms/{z}/answers/1",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=B0undary"},
            timeout=60,
        )
        assert r.status_code == 413 and "over the limit" in r.json()["message"], r.text
    except httpx.TransportError:
        pass  # the server answered 413 and closed while the client was still sending

    # cut off mid-way: a raw socket sends half of the declared body, then hangs up
    boundary = "cutB0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    body = head + good * 8 + f"\r\n--{boundary}--\r\n".encode()
    port = int(st.api.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            (
                f"POST /v1/rooms/{z}/answers/1 HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
        deadline = time.monotonic() + 20  # until the server wrote part of it
        while time.monotonic() < deadline and not any(".part" in n for n in answer_files(st, z)):
            time.sleep(0.02)
        assert any(".part" in n for n in answer_files(st, z)), "the upload never reached disk"
    deadline = time.monotonic() + 20  # the hang-up reaches the server: its temp file goes
    while time.monotonic() < deadline and any(".part" in n for n in answer_files(st, z)):
        time.sleep(0.05)

    # nothing of the refused uploads stayed: one file (the first answer), no temp files,
    # one answer row, one queued answer job
    assert answer_files(st, z) == [Path(kept).name]
    room = httpx.get(f"{st.api}/v1/rooms/{z}", timeout=30).json()
    assert [(a["index"], a["media"]) for a in room["answers"]] == [(1, kept)]
    jobs = queued(st, z)
    assert len([j for j in jobs if "-answer-" in j]) == 1, jobs
    assert not [j for j in jobs if "-bqfk-" in j]

    # the room still takes a good answer; the kept one was analysed (silence: nothing said)
    r = upload(st, z, 0, "ok.wav", good, "audio/wav")
    assert r.status_code == 202
    got = wait_answer(st, z, 1)
    assert got["status"] == "done" and got["transcript"]["text"] == "", got
    assert got["delivery"]["rate"] == "none" and got["delivery"]["length"]["verdict"] == "none"

    # unknown question, closed room: clear 4xx, nothing kept
    r = upload(st, z, 5, "ok.wav", good, "audio/wav")
    assert r.status_code == 404 and "no question 5" in r.json()["message"]
    from digihuman.rooms.db import open_database
    from digihuman.rooms.store import RoomStore

    store = RoomStore(open_database(st.db_url))
    try:
        store.close_room(z, "test")
    finally:
        store.close()
    n = len(answer_files(st, z))
    r = upload(st, z, 0, "late.wav", good, "audio/wav")
    assert r.status_code == 410 and "closed" in r.json()["message"]
    assert len(answer_files(st, z)) == n


def test_upload_throughput(stack: Stack) -> None:
    """A 32 MB recording (174 s of silence at 48 kHz stereo) streamed to the real API; the
    figure is printed (docs/architecture.md quotes it)."""
    st = stack
    z = new_room(st, count=1)["zbjname"]
    seconds = 32 * 1024 * 1024 // (48000 * 4)
    data = wav_bytes(np.zeros(48000 * seconds * 2, np.float32), rate=48000, channels=2)
    t0 = time.perf_counter()
    r = upload(st, z, 0, "long.wav", data, "audio/wav")
    wall = time.perf_counter() - t0
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["bytes"] == len(data) and (st.root / body["media"]).stat().st_size == len(data)
    mb_s = len(data) / 1e6 / wall
    print(
        f"\nupload throughput ({st.db_url.split(':')[0]}): {len(data) / 1e6:.1f} MB in "
        f"{wall:.2f} s = {mb_s:.0f} MB/s end to end (server-side {body['upload_mb_per_s']} MB/s)"
    )
    assert mb_s > 5  # even a loaded 2-core machine streams far faster than a network
    # its analysis fails with the reason recorded (174 s > api.max_audio_seconds); the room
    # stays usable
    got = wait_answer(st, z, 0)
    assert got["status"] == "failed" and "120 s limit" in got["error"], got
    room = httpx.get(f"{st.api}/v1/rooms/{z}", timeout=30).json()
    assert room["status"] == "ready" and room["answers"][0]["error"] == got["error"]
    small = wav_bytes(np.zeros(16000, np.float32))
    assert upload(st, z, 0, "again.wav", small, "audio/wav").status_code == 202
    assert not (st.root / body["media"]).exists()  # the replaced upload's file is gone


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_replaced_answer_takes_no_results_from_its_old_job(kind: str, tmp_path: Path) -> None:
    """The store side of at-least-once delivery: results are written only by the job the
    answer row names; a second upload (new job) makes the first job's writes no-ops."""
    from digihuman.rooms.db import open_database
    from digihuman.rooms.store import NewQuestion, RoomStore

    gen = database_url(kind, tmp_path)
    url = next(gen)
    store = RoomStore(open_database(url))
    try:
        z = store.create(
            owner="a", language="en", avatar="a", timeout_s=60, questions=[NewQuestion("Why?")]
        ).zbjname
        common = {"media_type": "audio", "content_type": None, "media_bytes": 10, "duration_s": 1.0}
        first, old = store.put_answer(z, 0, media_path="tests/answers/1.wav", job_id="j1", **common)
        assert old is None and first.status == "uploaded"
        assert store.update_answer(z, 0, job_id="j1", status="analysing")
        _, old = store.put_answer(z, 0, media_path="tests/answers/2.wav", job_id="j2", **common)
        assert old == "tests/answers/1.wav"  # the caller removes the replaced file
        assert not store.update_answer(z, 0, job_id="j1", status="done", data={"x": 1})
        assert store.update_answer(z, 0, job_id="j2", status="done", data={"x": 2})
        assert store.update_answer(z, 0, job_id="j2", status="done", data={"x": 2})  # again: same
        got = store.get_answer(z, 0)
        assert got is not None and (got.status, got.data, got.job_id) == ("done", {"x": 2}, "j2")
        room = store.get(z)
        assert room is not None and len(room.answers) == 1
    finally:
        store.close()
        for _ in gen:
            pass


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_redis_down_at_upload_answers_503_and_records_why(kind: str, tmp_path: Path) -> None:
    """The upload is stored, but its job cannot be queued: 503, and the answer says so (a new
    upload of it, once Redis is back, replaces it)."""
    from fastapi.testclient import TestClient

    from digihuman.api.app import create_app
    from digihuman.config import RoomsSettings, Settings

    gen = database_url(kind, tmp_path)
    url = next(gen)
    try:
        s = Settings(data_dir=tmp_path / "root", redis_url=f"redis://127.0.0.1:{_free_port()}/15")
        s.database_url = s.rooms.database_url = url
        s.rooms = RoomsSettings(**{**s.rooms.model_dump(), "clips": False})
        with TestClient(create_app(s)) as c:
            z = c.get("/create/zbjv2", params={"username": "a", "job": "nurse", "count": 1})
            z = z.json()["zbjname"]
            wav = wav_bytes(np.zeros(16000, np.float32))
            r = c.post(f"/v1/rooms/{z}/answers/0", files={"file": ("a.wav", wav, "audio/wav")})
            assert r.status_code == 503 and "Redis" in r.json()["message"], r.text
            got = c.get(f"/v1/rooms/{z}/answers/0").json()
            assert got["status"] == "failed" and "could not be queued" in got["error"]
    finally:
        for _ in gen:
            pass
