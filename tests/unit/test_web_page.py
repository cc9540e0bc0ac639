"""The demo page's actions (``digihuman.web.app.Page``) against a recording stand-in API.

What is checked is what the page sends and how it shapes the answers: the engine radio from
``GET /v1/engines`` (unavailable engines listed with their fetch command), ``bbox_shift`` sent
only to an engine that takes it, the delete call. The real API behind the page is driven by the
browser test (tests/integration/test_web_browser.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from digihuman.web.app import Api, Page, label

ENGINES = {
    "lipsync": {
        "default": "lite",
        "engines": [
            {"name": "lite", "default": True, "available": True, "detail": "", "options": []},
            {
                "name": "musetalk",
                "default": False,
                "available": False,
                "detail": "2 of 9 weight files missing",
                "options": ["bbox_shift"],
                "missing": ["/m/musetalk/unet.pth", "/m/sd-vae/config.json"],
                "fetch": "digihuman models download --version v1",
            },
        ],
    },
    "tts": {
        "default": "espeak",
        "engines": [{"name": "espeak", "default": True, "available": True, "detail": ""}],
    },
    "asr": {"default": "fake", "engines": []},
}


class StandIn:
    """Answers the page's calls and keeps each request (method, path, JSON body)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content[:1] == b"{" else None
        self.calls.append((request.method, request.url.path, body))
        path = request.url.path
        if path == "/v1/engines":
            return httpx.Response(200, json=ENGINES)
        if path == "/v1/uploads":
            return httpx.Response(201, json={"path": "tests/uploads/x.wav", "bytes": 3})
        if path == "/v1/render":
            return httpx.Response(202, json={"id": "j1", "status": "queued", "progress": 0.0})
        if path == "/v1/jobs/j1":
            self.polls += 1
            if self.polls < 3:
                p = self.polls / 3
                return httpx.Response(200, json={"id": "j1", "status": "running", "progress": p})
            res = {"path": "results/output/j1.mp4", "engine": "musetalk", "bbox_shift": 7}
            return httpx.Response(
                200, json={"id": "j1", "status": "done", "progress": 1.0, "result": res}
            )
        if path == "/v1/files/results/output/j1.mp4":
            return httpx.Response(200, content=b"mp4")
        if request.method == "DELETE" and path == "/v1/avatars/alice":
            return httpx.Response(200, json={"deleted": "alice"})
        if request.method == "DELETE":
            return httpx.Response(404, json={"message": "no prepared avatar"})
        return httpx.Response(404, json={"message": f"not in the stand-in: {path}"})


@pytest.fixture
def page(tmp_path: Path) -> tuple[Page, StandIn]:
    api = StandIn()
    return Page(Api("http://api", transport=httpx.MockTransport(api)), tmp_path), api


def test_engine_radio_lists_unavailable_engines_with_the_fetch_command(
    page: tuple[Page, StandIn],
) -> None:
    p, _ = page
    listing = p.engines()
    choices, default, off, options = p.engine_choices(listing, "en")
    assert default == "lite" and off == ["musetalk"]
    assert choices == [("lite (default)", "lite"), ("musetalk — weights missing", "musetalk")]
    assert options == {"lite": [], "musetalk": ["bbox_shift"]}
    note = p.engine_note(listing, "en")
    assert "musetalk" in note and "`/m/musetalk/unet.pth`" in note
    assert "`digihuman models download --version v1`" in note
    assert label("not_selectable", "zh") in p.engine_note(listing, "zh")
    rows = p.weights_table()
    assert rows[1][:4] == ["lipsync", "musetalk", "", "✗"]
    assert rows[1][4] == "digihuman models download --version v1"
    assert rows[1][6] == "/m/musetalk/unet.pth\n/m/sd-vae/config.json"


def test_render_sends_bbox_shift_only_to_an_engine_that_takes_it(
    page: tuple[Page, StandIn], tmp_path: Path
) -> None:
    p, api = page
    opts = {"lite": [], "musetalk": ["bbox_shift"]}
    assert p.render_body("s", "a", "lite", 7, opts) == {
        "source": "s",
        "audio": "a",
        "engine": "lite",
        "bbox_shift": None,
    }
    wav = tmp_path / "speech.wav"
    wav.write_bytes(b"RIF")
    out = list(p.render(None, "portrait.jpg", str(wav), "", "musetalk", 7.0, opts))
    # the bundled portrait and the speech are uploaded, then the render asked for
    paths = [path for _, path, _ in api.calls]
    assert paths[:3] == ["/v1/uploads", "/v1/uploads", "/v1/render"], paths
    posted = [b for _, path, b in api.calls if path == "/v1/render"]
    assert posted == [
        {"source": "tests/uploads/x.wav", "audio": "tests/uploads/x.wav", "engine": "musetalk"}
        | {"bbox_shift": 7}
    ]
    bars = [bar for _, bar, _, _ in out]
    values = [b.split('value="')[1].split('"')[0] for b in bars]
    assert len(set(values)) >= 3, values  # the bar moves: 0 → 1/3 → 2/3 → 1
    status, _, video, download = out[-1]
    assert "done → results/output/j1.mp4" in status and "bbox_shift 7" in status
    assert video == download and Path(video).read_bytes() == b"mp4"


def test_delete_avatar_calls_the_api(page: tuple[Page, StandIn]) -> None:
    p, api = page
    assert p.delete_avatar("alice") == {"deleted": "alice"}
    assert ("DELETE", "/v1/avatars/alice", None) in api.calls
    with pytest.raises(RuntimeError, match="404"):
        p.delete_avatar("bob")
