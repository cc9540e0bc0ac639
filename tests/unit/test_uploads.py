"""``POST /v1/uploads`` and ``GET /v1/avatars`` (the demo page's API), without Redis."""

from __future__ import annotations

import socket
from pathlib import Path

from fastapi.testclient import TestClient

from digihuman.api.app import create_app
from digihuman.config import ApiSettings, Settings


def _client(tmp_path: Path) -> TestClient:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = Settings(data_dir=tmp_path / "root", redis_url=f"redis://127.0.0.1:{port}/15")
    settings.api = ApiSettings(**{**settings.api.model_dump(), "rate_limit_per_minute": 0})
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_upload_is_stored_under_tests_uploads_and_served_back(tmp_path: Path) -> None:
    body = b"\xff\xd8\xff" + b"x" * 2_000_000  # over the API's 1 MiB body cap for other routes
    with _client(tmp_path) as c:
        r = c.post("/v1/uploads", params={"name": "me.JPG"}, content=body)
        assert r.status_code == 201, r.text
        rel = r.json()["path"]
        assert rel.startswith("tests/uploads/") and rel.endswith(".jpg")
        assert r.json()["bytes"] == len(body)
        assert (tmp_path / "root" / rel).read_bytes() == body
        assert c.get(f"/v1/files/{rel}").content == body
        assert not list((tmp_path / "root" / "tests" / "uploads").glob("*.part"))


def test_upload_refusals_keep_nothing(tmp_path: Path) -> None:
    with _client(tmp_path) as c:
        for name in ("run.sh", "noext", "../../x.jpg", "a\\b.png"):
            r = c.post("/v1/uploads", params={"name": name}, content=b"data")
            assert r.status_code == 422, (name, r.text)
            assert "refused upload" in r.json()["message"]
        r = c.post("/v1/uploads", params={"name": "empty.wav"}, content=b"")
        assert r.status_code == 422 and "empty" in r.json()["message"]
        folder = tmp_path / "root" / "tests" / "uploads"
        assert not folder.exists() or not list(folder.iterdir())
        assert c.get("/v1/avatars").json() == {"avatars": []}
