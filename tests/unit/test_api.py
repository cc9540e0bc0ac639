"""The API without a queue behind it: validation, errors, auth, confinement, limits, files.

Redis points at a closed port here: whatever needs it must answer a JSON 503 at once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from digihuman.api.app import create_app
from digihuman.config import ApiSettings, Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_OPEN: list[TestClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().__exit__(None, None, None)


def _client(tmp_path: Path, **api: Any) -> TestClient:
    """A client with the app's lifespan running (closed after the test)."""
    settings = Settings(
        data_dir=tmp_path / "root",
        redis_url=f"redis://127.0.0.1:{_closed_port()}/15",
    )
    settings.api = ApiSettings(**{**settings.api.model_dump(), "rate_limit_per_minute": 0, **api})
    c = TestClient(create_app(settings), raise_server_exceptions=False).__enter__()
    _OPEN.append(c)
    return c


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return _client(tmp_path)


def _is_json_error(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in r.text
    return str(body["message"])


LIVE = [
    ("/human", {"zbjname": "room1", "audioUrl": "tests/a.wav"}),
    ("/humanv2", {"zbjname": "room1", "audioUrl": "tests/a.wav"}),
]


@pytest.mark.parametrize(("path", "params"), LIVE)
def test_live_seed_endpoints_validate_then_name_the_unknown_room(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    assert "room1" in _is_json_error(client.get(path, params=params), 404)
    for missing in params:
        partial = {k: v for k, v in params.items() if k != missing}
        assert missing in _is_json_error(client.get(path, params=partial), 422)


def test_bad_numbers_are_422(client: TestClient) -> None:
    _is_json_error(client.get("/bqfk", params={"url": "x", "msId": "m", "index": "a"}), 422)
    q = {"username": "a", "job": "j", "count": "0"}
    _is_json_error(client.get("/create/zbjv2", params=q), 422)


def test_tts_text_bounds(tmp_path: Path) -> None:
    c = _client(tmp_path, max_text_chars=50)
    assert "empty" in _is_json_error(c.get("/tts", params={"msg": "   "}), 422)
    assert "limit" in _is_json_error(c.get("/tts", params={"msg": "x" * 51}), 413)
    _is_json_error(c.get("/tts"), 422)
    _is_json_error(c.get("/tts", params={"msg": "hi", "wait": "-1"}), 422)
    _is_json_error(c.get("/tts", params={"msg": "hi", "wait": "100000"}), 422)


@pytest.mark.timeout(15)
def test_redis_down_is_a_503_at_once(client: TestClient) -> None:
    msg = _is_json_error(client.get("/tts", params={"msg": "hello"}), 503)
    assert "Redis" in msg
    _is_json_error(client.post("/v1/tts", json={"text": "hello"}), 503)
    assert client.get("/healthz").json() == {"status": "ok"}
    _is_json_error(client.get("/readyz"), 503)
    r = client.get("/metrics")  # still answers
    assert r.status_code == 200 and "digihuman_http_requests_total" in r.text


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    assert "no such endpoint" in _is_json_error(client.get("/nope"), 404)
    assert "not allowed" in _is_json_error(client.post("/tts"), 405)
    _is_json_error(client.get("/v1/jobs/not-a-uuid"), 422)


def test_api_key_on_everything_but_health(tmp_path: Path) -> None:
    c = _client(tmp_path, api_key="s3cret")
    assert "API key" in _is_json_error(c.get("/create/zbj", params={"username": "a"}), 401)
    _is_json_error(c.get("/create/zbj", params={"username": "a", "key": "wrong"}), 401)
    _is_json_error(c.get("/docs"), 401)
    _is_json_error(c.get("/metrics"), 401)
    ok_q = c.get("/create/zbj", params={"username": "a", "key": "s3cret"})
    ok_h = c.get("/create/zbj", params={"username": "a"}, headers={"X-API-Key": "s3cret"})
    assert ok_q.status_code == ok_h.status_code == 200  # past the key check
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 503  # open, but not ready (no Redis)
    spec = c.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKeyHeader", "ApiKeyQuery"}


TRAVERSAL = [
    "../etc/passwd",
    "../../../../etc/passwd",
    "tests/../../etc/passwd",
    "/etc/passwd",
    "/tmp",
    "~/x.wav",
    "~root/.ssh/id_rsa",
    "tests/..",
    "..",
    "tests\\..\\..\\x.wav",
    "tests/x.wav\x00.png",
    "./../x",
    "tests/./../../x",
    "audios/../../../x",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_path_traversal_refused(client: TestClient, path: str) -> None:
    r = client.get("/asr", params={"url": path})
    assert r.status_code in (400, 404, 422), r.text
    _is_json_error(r, r.status_code)
    r = client.post("/v1/render", json={"source": path, "audio": "tests/a.wav"})
    assert r.status_code in (400, 404, 422)


@pytest.mark.parametrize(
    "path",
    ["..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "tests/%2e%2e/%2e%2e/etc/passwd"],
)
def test_file_download_traversal_refused(client: TestClient, path: str) -> None:
    r = client.get(f"/v1/files/{path}")
    assert r.status_code in (400, 404, 422)
    assert "root:" not in r.text


def test_symlink_out_of_the_data_root_refused(tmp_path: Path) -> None:
    c = _client(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (tmp_path / "root" / "tests" / "link.txt").symlink_to(outside)
    r = c.get("/v1/files/tests/link.txt")
    _is_json_error(r, 400)
    assert "secret" not in r.text


SSRF = [
    "http://127.0.0.1/a.wav",
    "http://localhost/a.wav",
    "http://localhost.:8181/a.wav",
    "http://[::1]/a.wav",
    "http://[::ffff:127.0.0.1]/a.wav",
    "http://0.0.0.0/a.wav",
    "http://2130706433/a.wav",
    "http://0x7f000001/a.wav",
    "http://127.1/a.wav",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/a.wav",
    "http://192.168.1.1/a.wav",
    "http://172.16.0.1/a.wav",
    "http://[fd00::1]/a.wav",
    "http://user:pw@example.com/a.wav",
    "http://example.com@127.0.0.1/a.wav",
    "https://evil.example.net/a.wav",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ftp://example.com/a.wav",
    "http:///a.wav",
    "http://127.0.0.1:6379/",
]


@pytest.mark.parametrize("url", SSRF)
def test_ssrf_refused(tmp_path: Path, url: str) -> None:
    # even allow-listed, internal hosts stay refused unless allow_private_urls is set
    allow = ["127.0.0.1", "localhost", "::1", "0.0.0.0", "2130706433", "0x7f000001", "127.1"]
    allow += ["169.254.169.254", "10.0.0.1", "192.168.1.1", "172.16.0.1", "fd00::1"]
    allow += ["example.com", "::ffff:127.0.0.1"]
    c = _client(tmp_path, url_allowlist=allow)
    r = c.get("/asr", params={"url": url})
    assert r.status_code in (400, 404, 422), (url, r.text)
    _is_json_error(r, r.status_code)
    r = c.post("/v1/asr", json={"url": url})
    assert r.status_code in (400, 404, 422)


def test_file_download_with_range(tmp_path: Path) -> None:
    c = _client(tmp_path)
    data = bytes(range(256)) * 40
    (tmp_path / "root" / "results" / "output" / "v.mp4").write_bytes(data)
    full = c.get("/v1/files/results/output/v.mp4")
    assert full.status_code == 200 and full.content == data
    part = c.get("/v1/files/results/output/v.mp4", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    _is_json_error(c.get("/v1/files/results/output/missing.mp4"), 404)
    (tmp_path / "root" / "redis").mkdir()
    (tmp_path / "root" / "redis" / "appendonly.aof").write_text("queue data")
    _is_json_error(c.get("/v1/files/redis/appendonly.aof"), 404)  # not downloadable
    _is_json_error(c.get("/v1/files/results/output"), 404)


def test_rate_limit_on_expensive_endpoints(tmp_path: Path) -> None:
    c = _client(tmp_path, rate_limit_per_minute=60, rate_limit_burst=2)
    codes = [c.get("/tts", params={"msg": "hi"}).status_code for _ in range(3)]
    assert codes[:2] == [503, 503]  # allowed through to the (absent) queue
    r = c.get("/tts", params={"msg": "hi"})
    assert "rate limit" in _is_json_error(r, 429) and int(r.headers["retry-after"]) >= 1
    assert c.get("/create/zbj", params={"username": "a"}).status_code == 200  # not limited


def test_body_size_bound(client: TestClient) -> None:
    r = client.post(
        "/v1/tts", content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers={"content-type": "x"}
    )
    _is_json_error(r, 413)


def test_cors_from_the_configured_list(tmp_path: Path) -> None:
    c = _client(tmp_path, cors_origins=["https://app.example.com"], api_key="k")
    pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    r = c.options("/tts", headers=pre)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    bad = c.options("/tts", headers={**pre, "Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in bad.headers
    delete = {**pre, "Access-Control-Request-Method": "DELETE"}  # DELETE /v1/avatars/{id}
    r = c.options("/v1/avatars/a1", headers=delete)
    assert r.status_code == 200 and "DELETE" in r.headers["access-control-allow-methods"]


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    seed = {"/tts", "/asr", "/bqfk", "/create/zbj", "/create/zbjv2", "/human", "/humanv2"}
    v1 = {"/v1/tts", "/v1/asr", "/v1/render", "/v1/jobs/{job_id}", "/v1/files/{path}"}
    assert seed | v1 | {"/healthz", "/readyz", "/metrics"} <= paths
    assert client.get("/docs").status_code == 200


def test_no_rate_limit_per_address_by_default(tmp_path: Path) -> None:
    assert ApiSettings().rate_limit_per_minute == 0
    settings = Settings(
        data_dir=tmp_path / "root", redis_url=f"redis://127.0.0.1:{_closed_port()}/15"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        codes = {c.get("/tts", params={"msg": "hi"}).status_code for _ in range(60)}
    assert codes == {503}  # through to the (absent) queue every time, never 429


def test_several_api_keys_with_their_own_limits(tmp_path: Path) -> None:
    keys = [
        {"name": "backend", "key": "k-backend"},  # no limit
        {"name": "demo", "key": "k-demo", "per_minute": 60, "burst": 2},
    ]
    c = _client(tmp_path, api_key="k-old", api_keys=keys)
    for key in ("k-backend", "k-demo", "k-old"):
        r = c.get("/create/zbj", params={"username": "a"}, headers={"X-API-Key": key})
        assert r.status_code == 200  # each key gets past the check
    _is_json_error(c.get("/create/zbj", params={"username": "a", "key": "k-nope"}), 401)

    demo = {"X-API-Key": "k-demo"}
    assert [c.get("/tts", params={"msg": "hi"}, headers=demo).status_code for _ in range(2)] == [
        503,
        503,
    ]  # allowed through to the (absent) queue
    r = c.post("/v1/tts", json={"text": "hi"}, headers=demo)
    msg = _is_json_error(r, 429)
    assert "'demo'" in msg and "k-demo" not in msg and int(r.headers["retry-after"]) >= 1
    # the other keys are not held back by it, nor is a non-work endpoint
    backend = {"X-API-Key": "k-backend"}
    assert {c.get("/tts", params={"msg": "x"}, headers=backend).status_code for _ in range(30)} == {
        503
    }
    assert c.get("/create/zbj", params={"username": "a"}, headers=demo).status_code == 200


def test_api_keys_must_be_distinct(tmp_path: Path) -> None:
    from digihuman.errors import DigihumanError

    same = [{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}]
    with pytest.raises(DigihumanError, match="distinct"):
        _client(tmp_path, api_keys=same)
    with pytest.raises(DigihumanError, match="distinct"):
        _client(tmp_path, api_key="k1", api_keys=[{"name": "b", "key": "k1"}])


LONG = "a" * 300


@pytest.mark.parametrize("path", [f"tests/{LONG}.wav", f"{LONG}/a.wav", f"tests/{'é' * 130}.wav"])
def test_an_overlong_path_component_is_a_4xx(tmp_path: Path, path: str) -> None:
    c = _client(tmp_path)
    (tmp_path / "root" / "tests" / "a.png").write_bytes(b"x")
    assert "longer than 255 bytes" in _is_json_error(c.get("/asr", params={"url": path}), 400)
    _is_json_error(c.post("/v1/asr", json={"url": path}), 400)
    _is_json_error(c.get(f"/v1/files/{path}"), 400)
    _is_json_error(c.get(f"/v1/files/results/{path}"), 400)
    _is_json_error(c.post("/v1/render", json={"source": path, "audio": "tests/a.wav"}), 400)
    _is_json_error(c.post("/v1/render", json={"source": "tests/a.png", "audio": path}), 400)


def test_upper_case_url_schemes_are_urls(tmp_path: Path) -> None:
    c = _client(tmp_path, url_allowlist=["127.0.0.1"])
    for url in ("HTTP://127.0.0.1/a.wav", "Https://127.0.0.1/a.wav"):
        # checked as a URL (loopback refused), not looked up as a file
        assert "non-public" in _is_json_error(c.get("/asr", params={"url": url}), 400)
    assert "only http and https" in _is_json_error(
        c.get("/asr", params={"url": "FILE:///etc/passwd"}), 400
    )
