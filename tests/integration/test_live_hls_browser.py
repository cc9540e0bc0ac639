"""The viewer page's HLS fallback in headless Chromium (no native HLS there: the vendored hls.js
over MediaSource), forced with ``?mode=hls``, through an API key given as ``?key=``.

API + one ``stream`` worker + Redis on loopback. Checked: the video plays (currentTime advances,
readyState >= 3), a screenshot shows the room's face, the picture changes while the room speaks,
and every resource the page loaded came from the API on 127.0.0.1. A second API whose hls.js is
absent (another HOME) serves a page that says so and names the install command.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from browserfixtures import assert_face_speaking, chromium, needs_chromium, video_shots, wait_video

from digihuman.api import hlsjs

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing"),
    pytest.mark.skipif(
        hlsjs.installed() is None, reason=f"hls.js is not installed: {hlsjs.INSTALL_HINT}"
    ),
]
KEY = "hls-test-key"


def until(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_viewer_hls_mode_plays_the_room_in_chromium(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    import httpx

    root = tmp_path / "root"
    (root / "tests").mkdir(parents=True)
    wav = resources.files("digihuman.assets") / "speech_en.wav"
    shutil.copy(str(wav), root / "tests" / "s.wav")
    env = helpers.service_env(
        redis_url,
        root,
        DIGIHUMAN_JOBS__KINDS='["stream"]',
        DIGIHUMAN_ROOMS__CLIPS="false",
        DIGIHUMAN_LIVE__RECORD="false",
        DIGIHUMAN_API_KEY=KEY,
    )
    procs.worker("stream", env)
    api = procs.api(env)
    helpers.wait_ready(redis_url, "stream", timeout=60)
    c = httpx.Client(base_url=api, timeout=60, headers={"X-API-Key": KEY})
    z = c.get("/create/zbj", params={"username": "hls test"}).json()["message"]

    js = c.get("/v1/static/hls.min.js")
    assert js.status_code == 200 and js.headers["cache-control"] == "public, max-age=86400"
    assert httpx.get(f"{api}/v1/static/hls.min.js").status_code == 401  # the key is needed

    with chromium() as drv:
        drv.get(f"{api}/v1/rooms/{z}/view?mode=hls&key={KEY}")  # opens the room itself
        wait_video(drv, ready=3, timeout=60)
        mode, status = drv.execute_script(
            "return [document.body.dataset.mode, document.getElementById('s').textContent]"
        )
        assert (mode, status) == ("hls", "HLS (hls.js)")
        played = "const v = document.getElementById('v'); return [v.currentTime, v.readyState];"
        t0, _ = drv.execute_script(played)
        time.sleep(1.0)
        t1, ready = drv.execute_script(played)
        assert t1 - t0 > 0.5 and ready >= 3, (t0, t1, ready)  # playing, not stalled

        # the room speaks (~21 s queued): /human → the mouth moves in the player, measured on
        # the decoded picture (a canvas copy of the video's mouth region against idle)
        mouth = (
            "const v = document.getElementById('v'), c = document.createElement('canvas');"
            "c.width = c.height = 512; const g = c.getContext('2d');"
            "g.drawImage(v, 0, 0, 512, 512);"
            "const d = g.getImageData(185, 125, 75, 50).data;"
            "if (!window.idleMouth) { window.idleMouth = d; return 0; }"
            "let s = 0;"
            "for (let i = 0; i < d.length; i++) s += Math.abs(d[i] - window.idleMouth[i]);"
            "return s / d.length;"
        )
        drv.execute_script(mouth)
        idle = max(drv.execute_script(mouth) for _ in range(5))
        assert idle < 1.0, f"the mouth moves while idle ({idle:.2f})"
        said = time.monotonic()
        assert c.get("/human", params={"zbjname": z, "audioUrl": "tests/s.wav"}).status_code == 200
        c.get("/human", params={"zbjname": z, "audioUrl": "tests/s.wav"})
        until(lambda: drv.execute_script(mouth) > 3.0, 30, "the speech to reach the player")
        seen = time.monotonic() - said
        shots = video_shots(drv, n=6, every=0.3)
        ahead = drv.execute_script(
            "const v = document.getElementById('v'), b = v.buffered;"
            "return b.length ? b.end(b.length - 1) - v.currentTime : null;"
        )
        urls = drv.execute_script(
            "return [location.href].concat("
            "performance.getEntriesByType('resource').map((e) => e.name));"
        )
    changes = assert_face_speaking(shots, root / "data" / "portrait.jpg")
    print(f"/human → mouth moving in the hls.js player: {seen:.2f} s; buffered ahead {ahead:.2f} s")
    print(f"mouth changes between screenshots: {[round(x, 1) for x in changes]}")
    assert any(u.endswith(".ts?key=" + KEY) for u in urls), urls  # segments carried the key
    assert any("/v1/static/hls.min.js" in u for u in urls), urls
    outside = [u for u in urls if not u.startswith(f"{api}/")]
    assert not outside, f"resources from elsewhere than the API on 127.0.0.1: {outside}"

    # without hls.js installed (another HOME), the page says so and how to install it
    home = tmp_path / "home"
    home.mkdir()
    api2 = procs.api({**env, "HOME": str(home)})
    assert httpx.get(f"{api2}/v1/static/hls.min.js", headers={"X-API-Key": KEY}).status_code == 404
    with chromium() as drv:
        drv.get(f"{api2}/v1/rooms/{z}/view?mode=hls&key={KEY}")
        status = until(
            lambda: (
                (t := drv.execute_script("return document.getElementById('s').textContent"))
                and "hls.js" in t
                and t
            ),
            20,
            "the page to say hls.js is missing",
        )
    assert "not installed" in status and "scripts/install.sh" in status, status
