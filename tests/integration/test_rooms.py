"""Rooms against real databases (SQLite and the PostgreSQL server at 127.0.0.1:5432, in a
database created and dropped here), a real Redis and real worker processes.

Every test that takes ``db_url`` runs twice: once per database.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbfixtures import database_url
from fastapi.testclient import TestClient

from digihuman.config import ApiSettings, RoomsSettings, Settings
from digihuman.rooms.db import open_database
from digihuman.rooms.store import ZBJNAME, NewQuestion, RoomStore, slugify


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path / "db")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(db_url: str) -> Iterator[tuple[RoomStore, Clock]]:
    clock = Clock()
    s = RoomStore(open_database(db_url), clock=clock)
    yield s, clock
    s.close()


QS = [NewQuestion("你为什么来？", "motivation"), NewQuestion("讲讲缓存。", "technical", "software")]


# --------------------------------------------------------------------------------------------
# the store


def test_schema_matches_the_models_and_migrating_twice_is_a_no_op(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from digihuman.rooms.db import migrate
    from digihuman.rooms.models import Base

    engine = open_database(db_url)
    try:
        migrate(engine)  # again: nothing to do, no error
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            from alembic.script import ScriptDirectory

            from digihuman.rooms.db import MIGRATIONS

            head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
            assert ctx.get_current_revision() == head
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_processes_opening_together_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []

    def go() -> None:
        try:
            open_database(db_url).dispose()
        except BaseException as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_create_and_read_a_room(store: tuple[RoomStore, Clock]) -> None:
    s, clock = store
    room = s.create(
        owner="张三 (Zhang)/../x",
        job="Java开发工程师",
        families=["software"],
        language="zh",
        avatar="data/portrait.jpg",
        timeout_s=360,
        questions=QS,
        question_engine="bank",
        seed=7,
        meta={"bank_version": "x"},
    )
    assert ZBJNAME.match(room.zbjname) and room.zbjname.startswith("zhang-san-zhang-x-")
    assert re.fullmatch(r"[a-z0-9-]+", room.zbjname)  # URL, file name and RTMP-key safe
    got = s.get(room.zbjname)
    assert got is not None and got == room
    assert got.status == "created" and got.expires_at == clock.now + 360
    assert [q.text for q in got.questions] == [q.text for q in QS]
    assert [q.clip_status for q in got.questions] == ["pending", "pending"]
    assert got.families == ("software",) and got.meta == {"bank_version": "x"} and got.seed == 7
    names = {
        s.create(owner="bob", language="en", avatar="a", timeout_s=1).zbjname for _ in range(50)
    }
    assert len(names) == 50  # randomness: no two alike
    assert s.get("nope") is None


def test_status_moves_forward_only(store: tuple[RoomStore, Clock]) -> None:
    from digihuman.errors import InputError

    s, _ = store
    z = s.create(owner="a", language="en", avatar="a", timeout_s=60, questions=QS).zbjname
    assert s.set_status(z, "ready").status == "ready"
    assert s.set_status(z, "live").status == "live"
    closed = s.close_room(z, "done")
    assert closed.status == "closed" and closed.close_reason == "done" and closed.closed_at
    with pytest.raises(InputError, match="cannot become"):
        s.set_status(z, "live")
    with pytest.raises(InputError, match="unknown room status"):
        s.set_status(z, "exploded")


def test_rooms_expire_after_inactivity(store: tuple[RoomStore, Clock]) -> None:
    s, clock = store
    a = s.create(owner="a", language="en", avatar="a", timeout_s=360).zbjname
    b = s.create(owner="b", language="en", avatar="a", timeout_s=360).zbjname
    clock.now += 300
    s.touch(b)  # activity: b's deadline moves
    clock.now += 100  # a idle 400 s, b idle 100 s
    assert s.expire_idle() == [a]
    ra, rb = s.get(a), s.get(b)
    assert ra is not None and ra.status == "closed" and ra.close_reason == "idle"
    assert rb is not None and rb.status == "ready"
    clock.now += 361  # no sweep: reading a room past its deadline closes it too
    rb = s.get(b)
    assert rb is not None and rb.status == "closed"
    assert s.touch(b).status == "closed"  # a closed room stays closed
    assert s.unfinished_clips() == []


def test_clip_claims_are_won_once(store: tuple[RoomStore, Clock]) -> None:
    s, _ = store
    z = s.create(owner="a", language="en", avatar="a", timeout_s=60, questions=QS).zbjname
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        wins.append(s.claim(z, 0, step="tts", job_id=f"{z}_0", expect=None))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]
    clips = s.unfinished_clips()
    assert [(q.index, q.clip_status, q.tts_job) for _, q in clips] == [
        (0, "speech", f"{z}_0"),
        (1, "pending", None),
    ]
    assert not s.mark_ready_if_done(z)
    s.update_clip(z, 0, clip_status="ready")
    s.update_clip(z, 1, clip_status="failed", clip_error="boom")
    assert s.mark_ready_if_done(z)
    room = s.get(z)
    assert room is not None and room.status == "ready"


def test_slugs() -> None:
    assert slugify("Alice Smith") == "alice-smith"
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("!!!") == "room"
    assert re.fullmatch(r"[a-z0-9-]{1,24}", slugify("x" * 100 + "é"))


# --------------------------------------------------------------------------------------------
# the API with real workers


def _settings(root: Path, redis_url: str, db_url: str, **rooms: Any) -> Settings:
    s = Settings(data_dir=root, redis_url=redis_url, database_url=db_url)
    s.api = ApiSettings(**{**s.api.model_dump(), "rate_limit_per_minute": 0})
    s.rooms = RoomsSettings(**{**s.rooms.model_dump(), "tick_s": 0.2, **rooms})
    return s


def _wait_room(c: TestClient, z: str, pred: Any, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = c.get(f"/v1/rooms/{z}")
        assert r.status_code == 200, r.text
        body = r.json()
        if pred(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"room {z} never got there: {body}")


@pytest.fixture
def workers(redis_url: str, tmp_path: Path, procs: Any, helpers: Any) -> Path:
    root = tmp_path / "root"
    env = helpers.service_env(redis_url, root, DIGIHUMAN_LIPSYNC__ENGINE="fake")
    procs.worker("tts", env)
    procs.worker("render", env)
    helpers.wait_ready(redis_url, "tts")
    helpers.wait_ready(redis_url, "render")
    return root


def test_seed_endpoints_and_clips(db_url: str, redis_url: str, workers: Path) -> None:
    root = workers
    app_settings = _settings(root, redis_url, db_url)
    from digihuman.api.app import create_app

    with TestClient(create_app(app_settings)) as c:
        r = c.get("/create/zbj", params={"username": "Alice"})
        assert r.status_code == 200 and list(r.json()) == ["message"]
        assert re.fullmatch(r"alice-[a-z0-9]{10}", r.json()["message"])

        r = c.get("/create/zbjv2", params={"username": "李雷", "job": "Java开发工程师", "count": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body) == ["zbjname", "question"]
        z, questions = body["zbjname"], body["question"]
        assert len(questions) == 3 and len(set(questions)) == 3
        assert all(re.search(r"[\u4e00-\u9fff]", q) for q in questions)  # the title's script

        room = _wait_room(c, z, lambda b: b["status"] == "ready")
        assert room["job"] == "Java开发工程师" and room["language"] == "zh"
        assert room["families"] == ["software"] and room["avatar"] == "data/portrait.jpg"
        assert [q["text"] for q in room["questions"]] == questions
        for i, q in enumerate(room["questions"]):
            clip = q["clip"]
            assert clip["status"] == "ready" and clip["progress"] == 1.0, clip
            assert clip["audio"] == f"tests/{z}_{i}.wav" and clip["video"] == f"tests/{z}_{i}.mp4"
            assert (root / clip["audio"]).stat().st_size > 1000
            mp4 = root / clip["video"]
            assert mp4.read_bytes()[4:8] == b"ftyp"
        assert room["clips_ready"] == 3
        # the clip downloads like any data-root file
        assert c.get(f"/v1/files/tests/{z}_0.mp4").status_code == 200

        r = c.get(
            "/create/zbjv2",
            params={"username": "x", "job": "Java开发工程师", "count": 2, "lang": "en", "seed": 5},
        )
        assert r.status_code == 200
        assert not any(re.search(r"[\u4e00-\u9fff]", q) for q in r.json()["question"])


def test_bounds_and_unknown_jobs(db_url: str, redis_url: str, tmp_path: Path) -> None:
    from digihuman.api.app import create_app

    s = _settings(tmp_path / "root", redis_url, db_url, clips=False)
    with TestClient(create_app(s)) as c:
        for count in ("0", "21", "-1", "abc", ""):
            r = c.get("/create/zbjv2", params={"username": "a", "job": "nurse", "count": count})
            assert r.status_code == 422 and "count" in r.json()["message"], (count, r.text)
        r = c.get(
            "/create/zbjv2", params={"username": "a", "job": "nurse", "count": 2, "lang": "fr"}
        )
        assert r.status_code == 422 and "zh or en" in r.json()["message"]
        r = c.get("/create/zbjv2", params={"username": "a", "job": "   ", "count": 2})
        assert r.status_code == 422
        r = c.get("/create/zbjv2", params={"username": "a", "count": 2})
        assert r.status_code == 422 and "job" in r.json()["message"]
        r = c.get("/create/zbjv2", params={"username": "a\x00b\n", "job": "nur\x00se", "count": 1})
        assert r.status_code == 200, r.text  # PostgreSQL refuses NUL: it never gets there
        room = c.get(f"/v1/rooms/{r.json()['zbjname']}").json()
        assert room["owner"] == "a b" and room["job"] == "nur se"
        r = c.get("/create/zbj", params={"username": "\x00"})
        assert r.status_code == 200 and r.json()["message"].startswith("room-")

        for job in ("宇航员", "Underwater basket weaver"):
            r = c.get("/create/zbjv2", params={"username": "a", "job": job, "count": 20})
            assert r.status_code == 200, r.text
            qs = r.json()["question"]
            assert len(qs) == 20 and len(set(qs)) == 20
        room = c.get(f"/v1/rooms/{r.json()['zbjname']}").json()
        assert room["families"] == ["general"] and room["status"] == "ready"  # clips off
        assert {q["clip"]["status"] for q in room["questions"]} == {"skipped"}

        params = {"username": "a", "job": "Data Analyst", "count": 6, "seed": 11}
        first = c.get("/create/zbjv2", params=params).json()
        again = c.get("/create/zbjv2", params=params).json()
        assert first["question"] == again["question"] and first["zbjname"] != again["zbjname"]

        assert c.get("/v1/rooms/NOT_A_NAME").status_code == 422
        assert c.get("/v1/rooms/no-such-room").status_code == 404


def test_idle_rooms_close(db_url: str, redis_url: str, tmp_path: Path) -> None:
    from digihuman.api.app import create_app

    s = _settings(
        tmp_path / "root", redis_url, db_url, inactivity_timeout_s=1.0, sweep_interval_s=0.2
    )
    with TestClient(create_app(s)) as c:
        z = c.get("/create/zbj", params={"username": "idle"}).json()["message"]
        assert c.get(f"/v1/rooms/{z}").json()["status"] == "ready"
        # the sweep closes it (it does not wait for a read)
        store = c.app.state.rooms.rooms.store  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with store.session() as sess:
                from digihuman.rooms.models import Room

                room = sess.get(Room, z)
                if room is not None and room.status == "closed":
                    break
            time.sleep(0.1)
        body = c.get(f"/v1/rooms/{z}").json()
        assert body["status"] == "closed" and body["close_reason"] == "idle"


def test_corrupt_avatar_fails_the_clip_and_the_room_stays_usable(
    db_url: str, redis_url: str, workers: Path
) -> None:
    from digihuman.api.app import create_app

    root = workers
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg" * 10)
    s = _settings(root, redis_url, db_url, avatar="data/broken.jpg")
    with TestClient(create_app(s)) as c:
        z = c.get("/create/zbjv2", params={"username": "a", "job": "nurse", "count": 2}).json()[
            "zbjname"
        ]
        room = _wait_room(c, z, lambda b: b["status"] == "ready")
        for q in room["questions"]:
            assert q["clip"]["status"] == "failed" and "render failed" in q["clip"]["error"]
            assert q["clip"]["audio"]  # the speech was made
            assert q["clip"]["video"] is None
        assert not list((root / "tests").glob(f"{z}_*.mp4"))


@pytest.mark.parametrize("redis_up", [True, False], ids=["queued", "redis-down"])
def test_clips_resume_after_the_api_restarts(
    db_url: str, redis_url: str, tmp_path: Path, procs: Any, helpers: Any, redis_up: bool
) -> None:
    """A room is created while no worker runs (``queued``: its first jobs wait in Redis;
    ``redis-down``: Redis refused them) and the API then stops; a new API process (same
    database) finishes the clips once Redis and the workers are up."""
    import socket

    from digihuman.api.app import create_app

    root = tmp_path / "root"
    s = _settings(root, redis_url, db_url)
    first = s
    if not redis_up:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        first = _settings(root, f"redis://127.0.0.1:{port}/15", db_url)
    with TestClient(create_app(first)) as c:
        z = c.get("/create/zbjv2", params={"username": "a", "job": "律师", "count": 2}).json()[
            "zbjname"
        ]
        assert {q["clip"]["status"] for q in c.get(f"/v1/rooms/{z}").json()["questions"]} <= {
            "pending",
            "speech",
        }
    env = helpers.service_env(redis_url, root, DIGIHUMAN_LIPSYNC__ENGINE="fake")
    procs.worker("tts", env)
    procs.worker("render", env)
    with TestClient(create_app(s)) as c:
        room = _wait_room(c, z, lambda b: b["status"] == "ready")
        assert [q["clip"]["status"] for q in room["questions"]] == ["ready", "ready"]
        assert all((root / q["clip"]["video"]).exists() for q in room["questions"])


def test_a_full_queue_delays_clips_without_failing_them(
    db_url: str, redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    """With room for one TTS job only, a 3-question room gets its questions at once; the other
    clips wait (not failed) and are made once workers drain the queue."""
    from digihuman.api.app import create_app
    from digihuman.config import JobSettings

    root = tmp_path / "root"
    s = _settings(root, redis_url, db_url)
    s.jobs = JobSettings(**{**s.jobs.model_dump(), "max_queued": {"tts": 1, "render": 1}})
    with TestClient(create_app(s)) as c:
        r = c.get("/create/zbjv2", params={"username": "a", "job": "会计", "count": 3})
        assert r.status_code == 200 and len(r.json()["question"]) == 3
        z = r.json()["zbjname"]
        time.sleep(1.0)  # a few conductor rounds against the full queue
        clips = [q["clip"] for q in c.get(f"/v1/rooms/{z}").json()["questions"]]
        assert [cl["status"] for cl in clips].count("failed") == 0
        assert sum(cl["status"] == "speech" for cl in clips) >= 1
        env = helpers.service_env(redis_url, root, DIGIHUMAN_LIPSYNC__ENGINE="fake")
        procs.worker("tts", env)
        procs.worker("render", env)
        room = _wait_room(c, z, lambda b: b["status"] == "ready")
        assert [q["clip"]["status"] for q in room["questions"]] == ["ready"] * 3
