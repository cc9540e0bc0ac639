"""``GET /v1/engines``, ``/v1/render``'s engine and bbox_shift checks, the render worker's
engine cache. MuseTalk "weights verify" runs on the tiny random-weights layout."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from digihuman.api.app import create_app
from digihuman.config import ApiSettings, Settings
from digihuman.pipeline.availability import Availability, EngineUnavailable, UnknownEngine
from digihuman.pipeline.engines import LipSyncCache


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MuseTalk v1.0's files with tiny random weights (written once for the module)."""
    from digihuman.engines.lipsync.musetalk import random_weights as RW

    d = tmp_path_factory.mktemp("tiny-models")
    RW.write_layout(d, "v1", size="tiny")
    return d


def _settings(root: Path, **kw: Any) -> Settings:
    s = Settings(data_dir=root, redis_url=f"redis://127.0.0.1:{_closed_port()}/15", **kw)
    s.api = ApiSettings(**{**s.api.model_dump(), "rate_limit_per_minute": 0})
    return s


def _with_models(root: Path, tiny: Path) -> Path:
    """A data root whose models/ is a copy of the tiny layout (own files: own mtimes)."""
    shutil.copytree(tiny, root / "models")
    return root


@pytest.fixture
def client_for() -> Iterator[Any]:
    opened: list[TestClient] = []

    def make(settings: Settings) -> TestClient:
        c = TestClient(create_app(settings), raise_server_exceptions=False).__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _engine(body: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    return next(e for e in body[kind]["engines"] if e["name"] == name)


def test_engines_lists_each_kind_with_default_availability_and_options(
    tmp_path: Path, client_for: Any
) -> None:
    c = client_for(_settings(tmp_path / "root"))
    r = c.get("/v1/engines")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"lipsync", "tts", "asr"}
    assert body["lipsync"]["default"] == "lite"
    names = [e["name"] for e in body["lipsync"]["engines"]]
    assert "lite" in names and "musetalk" in names and "fake" not in names
    lite = _engine(body, "lipsync", "lite")
    assert lite == {**lite, "default": True, "available": True, "options": []}
    mt = _engine(body, "lipsync", "musetalk")
    assert mt["available"] is False and mt["options"] == ["bbox_shift"]
    assert mt["fetch"] == "digihuman models download --version v1"
    models = tmp_path / "root" / "models"
    assert str(models / "musetalk" / "pytorch_model.bin") in mt["missing"]
    for kind in ("tts", "asr"):
        rows = body[kind]["engines"]
        assert [e["name"] for e in rows if e["default"]] == [body[kind]["default"]]
        for e in rows:
            assert isinstance(e["available"], bool)
            assert e["available"] or (e["missing"] and e["fetch"]), e


def test_musetalk_verifies_once_per_set_of_files(tmp_path: Path, tiny_models: Path) -> None:
    root = _with_models(tmp_path / "root", tiny_models)
    checker = Availability(_settings(root))
    st = checker.status("lipsync", "musetalk")
    assert st.available, st
    assert checker.verifications == 1
    t0 = time.perf_counter()
    for _ in range(20):
        assert checker.status("lipsync", "musetalk").available
    assert checker.verifications == 1
    assert (time.perf_counter() - t0) / 20 < 0.05  # a stat per file, no loading, no hashing
    # another process (a fresh checker) trusts the stamp written beside the weights
    again = Availability(_settings(root))
    assert again.status("lipsync", "musetalk").available and again.verifications == 0
    # a rewritten file (new mtime) is verified again; a broken one is reported with why
    unet = root / "models" / "musetalk" / "pytorch_model.bin"
    unet.write_bytes(b"not a checkpoint")
    bad = checker.status("lipsync", "musetalk")
    assert not bad.available and checker.verifications == 2
    assert any(m.startswith(str(unet)) for m in bad.missing), bad.missing
    assert bad.fetch and "models download" in bad.fetch
    with pytest.raises(EngineUnavailable, match=r"pytorch_model\.bin.*models download"):
        checker.require_lipsync("musetalk")
    with pytest.raises(UnknownEngine, match="available here: lite"):
        checker.require_lipsync("wav2lip")


def test_render_refuses_unknown_and_unavailable_engines_at_submit(
    tmp_path: Path, client_for: Any
) -> None:
    root = tmp_path / "root"
    c = client_for(_settings(root))
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "tests" / "a.wav").write_bytes(b"RIFF")
    (root / "tests" / "a.png").write_bytes(b"PNG")
    body = {"source": "tests/a.png", "audio": "tests/a.wav"}
    r = c.post("/v1/render", json={**body, "engine": "wav2lip"})
    assert r.status_code == 400, r.text
    assert "lite" in r.json()["message"] and "wav2lip" in r.json()["message"]
    r = c.post("/v1/render", json={**body, "engine": "musetalk"})
    assert r.status_code == 409, r.text
    msg = r.json()["message"]
    assert str(root / "models" / "musetalk" / "pytorch_model.bin") in msg
    assert "digihuman models download --version v1" in msg
    for shift in (-101, 101, 1.5, "up"):
        r = c.post("/v1/render", json={**body, "bbox_shift": shift})
        assert r.status_code == 422, r.text
        assert "bbox_shift" in r.json()["message"]
    # valid choices pass the checks and reach the queue (Redis is down here: 503)
    for extra in ({"engine": "lite", "bbox_shift": 5}, {"engine": None, "bbox_shift": -100}):
        r = c.post("/v1/render", json={**body, **extra})
        assert r.status_code == 503 and "Redis" in r.json()["message"], r.text


def test_render_accepts_musetalk_when_its_weights_verify(
    tmp_path: Path, tiny_models: Path, client_for: Any
) -> None:
    root = _with_models(tmp_path / "root", tiny_models)
    c = client_for(_settings(root))
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "tests" / "a.wav").write_bytes(b"RIFF")
    (root / "tests" / "a.png").write_bytes(b"PNG")
    assert _engine(c.get("/v1/engines").json(), "lipsync", "musetalk")["available"]
    r = c.post(
        "/v1/render",
        json={"source": "tests/a.png", "audio": "tests/a.wav", "engine": "musetalk",
              "bbox_shift": 8},
    )  # fmt: skip
    assert r.status_code == 503 and "Redis" in r.json()["message"], r.text  # past the checks


def test_engine_cache_reuses_builds_and_shares_musetalk_models(
    tmp_path: Path, tiny_models: Path
) -> None:
    root = _with_models(tmp_path / "root", tiny_models)
    settings = _settings(root)
    settings.musetalk.device = "cpu"
    cache = LipSyncCache(settings, size=3)
    lite, applied, ignored = cache.get()
    assert lite.name == "lite" and applied == {} and ignored == []
    again, _, ignored = cache.get("lite", bbox_shift=12)  # lite has no bbox_shift
    assert again is lite and ignored == ["bbox_shift"] and cache.built == 1
    m0, applied, ignored = cache.get("musetalk")
    assert applied == {"bbox_shift": settings.musetalk.bbox_shift} and ignored == []
    m5, applied, _ = cache.get("musetalk", bbox_shift=5)
    assert applied == {"bbox_shift": 5} and m5 is not m0
    assert m5.settings_fingerprint()["bbox_shift"] == 5
    assert m5.load() is m0.load()  # one set of loaded weights for both masks
    assert cache.get("musetalk", bbox_shift=5)[0] is m5 and cache.built == 3
    cache.get("musetalk", bbox_shift=-5)  # a fourth engine: the least recently used goes
    assert cache.built == 4 and len(cache._engines) == 3
    assert cache.get("lite")[0] is not lite and cache.built == 5


def test_v15_ignores_bbox_shift(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "root")
    settings.musetalk.version = "v15"
    from digihuman.pipeline.engines import render_options

    assert render_options(settings, "musetalk", bbox_shift=5) == ({}, ["bbox_shift"])
    body = Availability(settings).status("lipsync", "musetalk").public()
    assert body["options"] == [] and body["version"] == "v15"
    assert not os.path.exists(tmp_path / "root" / "models" / ".verified-v15.json")


def test_render_from_a_prepared_avatar_needs_no_source(tmp_path: Path, client_for: Any) -> None:
    import numpy as np

    from digihuman.avatar.store import AvatarStore
    from digihuman.engines.base import PreparedAvatar

    root = tmp_path / "root"
    c = client_for(_settings(root))
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "tests" / "a.wav").write_bytes(b"RIFF")
    r = c.post("/v1/render", json={"audio": "tests/a.wav"})
    assert r.status_code == 422 and "avatar_id" in r.json()["message"], r.text
    r = c.post("/v1/render", json={"audio": "tests/a.wav", "avatar_id": "ghost"})
    assert r.status_code == 404 and "ghost" in r.json()["message"], r.text
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    AvatarStore(root / "results" / "avatars").save(
        "ava", PreparedAvatar(engine="lite", fps=25.0, frames=frames), source=None
    )
    r = c.post("/v1/render", json={"audio": "tests/a.wav", "avatar_id": "ava"})
    assert r.status_code == 503 and "Redis" in r.json()["message"], r.text  # past the checks
