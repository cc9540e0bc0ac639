"""The demo page in a real browser: Redis + the API + tts/render/stream workers + ``digihuman
web``, driven by Debian's headless Chromium through Selenium (nothing downloaded).

Each tab is used for real: Render lists the lip-sync engines of ``GET /v1/engines`` (musetalk
listed, not selectable, with the fetch command: no weights here), renders with lite (the
``bbox_shift`` slider disabled: lite takes none), the progress bar moves, the MP4 is downloaded
from the page's link and probed (frames and sound) and the job's result records the engine and
options applied; Interview creates a room and lists ``count`` questions; Live opens a room, its
viewer plays in the page's iframe, typed text is spoken; System shows the engines' weights and
the workers and queues; Avatars prepares an avatar, shows its thumbnail and deletes it (gone
from ``GET /v1/avatars``); the Chinese labels. No request leaves 127.0.0.1 (the browser's
resource timing). Screenshots go to ``$DIGIHUMAN_WEB_SHOTS`` (default: the test's tmp dir,
printed).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing"),
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="chromedriver missing"),
]
gradio = pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parents[2]
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1400",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
        except Exception:  # an element not there yet
            v = None
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out ({timeout:.0f} s) waiting for {what}")
        time.sleep(every)


def start_web(api: str, tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    log = open(tmp / "web.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(
        [sys.executable, "-m", "digihuman", "web", "--port", str(port), "--api", api],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        return httpx.get(url, timeout=2).status_code == 200

    until(up, 90, f"the demo page (see {log.name})", every=0.5)
    return p, url


def test_every_tab_in_headless_chromium(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    import av
    import httpx
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("DIGIHUMAN_WEB_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots}")
    root = tmp_path / "root"
    (root / "tests").mkdir(parents=True)
    env = helpers.service_env(
        redis_url,
        root,
        DIGIHUMAN_JOBS__KINDS='["tts", "render", "stream"]',
        DIGIHUMAN_ROOMS__CLIPS="false",
        DIGIHUMAN_LIVE__REPLY_TIMEOUT_S="40",
    )
    for kind in ("tts", "render", "stream"):
        procs.worker(kind, env)
    api = procs.api(env)
    web, url = start_web(api, tmp_path, env)
    procs.procs.append(web)
    for kind in ("tts", "render", "stream"):
        helpers.wait_ready(redis_url, kind, timeout=90)
    portrait = resources.files("digihuman.assets") / "portrait.jpg"
    speech = resources.files("digihuman.assets") / "speech_en.wav"

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (*CHROME_ARGS, f"--user-data-dir={tmp_path / 'chrome'}"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        drv.get(url)

        def el(css: str) -> Any:
            return drv.find_element(By.CSS_SELECTOR, css)

        def idle() -> bool:  # no output waiting (Gradio's loading bar and timer "0.3s")
            body = drv.find_element(By.TAG_NAME, "body").text
            return not drv.find_elements(By.CSS_SELECTOR, ".eta-bar") and not re.search(
                r"\b\d+\.\ds\b", body
            )

        def tab(name: str) -> None:
            btn = until(
                lambda: next(
                    b
                    for b in drv.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                    if b.text.strip() == name
                ),
                30,
                f"the {name} tab",
            )
            btn.click()

        until(lambda: el("#render").is_displayed(), 60, "the Render tab")
        until(lambda: el("#bundled-preview img"), 30, "the bundled portrait's preview")
        # ---------------------------------------------------------------- Render: engines
        engines = httpx.get(f"{api}/v1/engines", timeout=30).json()["lipsync"]
        by_name = {e["name"]: e for e in engines["engines"]}
        assert not by_name["musetalk"]["available"]  # no weights on this machine

        def radio(name: str) -> Any:
            return el(f"#engine input[type=radio][value={name}]")

        until(lambda: radio("lite").is_selected(), 30, "lite chosen (the default)")
        until(lambda: radio("musetalk").get_attribute("disabled") is not None, 30, "musetalk off")
        note = el("#engine-note").text
        assert "musetalk" in note and by_name["musetalk"]["fetch"] in note, note
        assert "weights missing" in el("#engine").text
        slider = el("#bbox-shift input[type=range]")
        assert slider.get_attribute("value") == "0"
        assert slider.get_attribute("disabled") is not None  # lite takes no bbox_shift
        # ---------------------------------------------------------------- Render
        el("#portrait input[type=file]").send_keys(str(portrait))
        el("#audio input[type=file]").send_keys(str(speech))
        until(lambda: "KB" in el("#portrait").text, 30, "the portrait upload")
        until(lambda: "0:11" in el("#audio").text, 30, "the speech upload")
        el("#render").click()
        bar_values: list[float] = []

        def rendered() -> str | None:
            v = float(el("#render-progress progress").get_attribute("value") or 0)
            if not bar_values or bar_values[-1] != v:
                bar_values.append(v)
            s = el("#status textarea").get_attribute("value") or ""
            return s if "done →" in s or s.startswith("error") else None

        status = until(rendered, 180, "the rendered video", every=0.1)
        timings["open_to_rendered_s"] = time.monotonic() - t0
        assert "done →" in status, status
        # the bar moves: from 0 through values between to 1
        until(lambda: rendered() and bar_values[-1] == 1.0, 10, f"a full bar ({bar_values})")
        assert any(0 < v < 1 for v in bar_values), bar_values
        until(lambda: el("#video video").get_attribute("src"), 30, "the video in the page")
        drv.save_screenshot(str(shots / "render.png"))
        job_id = status.split(":")[0].strip()
        result = httpx.get(f"{api}/v1/jobs/{job_id}", timeout=30).json()["result"]
        assert result["engine"] == "lite" and result["bbox_shift"] is None, result
        # the page's own download link (Gradio serves the file it fetched from the API)
        href = until(lambda: el("#download a").get_attribute("href"), 30, "the download link")
        assert href.startswith(url), href
        mp4 = tmp_path / "out.mp4"
        mp4.write_bytes(httpx.get(href, timeout=30).content)
        rel = status.split("done →")[1].split()[0]
        assert mp4.read_bytes() == httpx.get(f"{api}/v1/files/{rel}", timeout=30).content
        with av.open(str(mp4)) as c:
            assert c.streams.video and c.streams.audio
            frames = sum(1 for _ in c.decode(video=0))
        with av.open(str(mp4)) as c:
            sound = sum(f.samples for f in c.decode(audio=0))
        assert frames > 25 and sound > 16000, (frames, sound)

        # the same calls as curl, from docs/api.md (the page does nothing the API does not)
        doc = (REPO / "docs" / "api.md").read_text()
        block = doc.split("### The demo page's calls")[1].split("```bash\n")[1].split("```")[0]
        run = subprocess.run(
            ["bash", "-c", "set -e\n" + block],
            cwd=REPO,
            env={**os.environ, "API": api},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert '"status":"done"' in run.stdout and "}422\n" in run.stdout, run.stdout
        assert '"avatars":' in run.stdout

        # ---------------------------------------------------------------- System
        tab("System")  # selecting the tab loads it
        el("#sys-refresh").click()  # and so does the button
        until(lambda: "http_status" in el("#readyz").text, 30, "/readyz on the page")
        until(
            lambda: by_name["musetalk"]["fetch"] in el("#sys-engines").text,
            30,
            "the weights table with the fetch command",
        )
        until(lambda: "render" in el("#sys-workers").text, 30, "workers and queues")
        until(idle, 30, "the System tab loaded")
        drv.save_screenshot(str(shots / "system.png"))

        # ---------------------------------------------------------------- Interview
        tab("Interview")
        count = 3
        el("#iv-create").click()  # default job title and count (3)
        room = until(
            lambda: el("#iv-room input, #iv-room textarea").get_attribute("value"), 60, "a room"
        )
        questions = httpx.get(f"{api}/v1/rooms/{room}", timeout=30).json()["questions"]
        assert len(questions) == count
        # every question's text is listed on the page
        until(
            lambda: all(q["text"] in el("#iv-questions").text for q in questions),
            60,
            f"{count} questions on the page",
        )
        el("#iv-answer input[type=file]").send_keys(str(speech))  # question 0's answer
        until(lambda: "KB" in el("#iv-answer").text, 30, "the answer's upload")
        el("#iv-upload").click()
        until(lambda: "uploaded" in el("#iv-answer-out").text, 60, "the answer stored")
        answers = httpx.get(f"{api}/v1/rooms/{room}/answers/0", timeout=30)
        assert answers.status_code == 200, answers.text
        el("#iv-report").click()
        until(lambda: "suggestions" in el("#iv-report-out").text, 60, "the room's report")
        drv.save_screenshot(str(shots / "interview.png"))

        # ---------------------------------------------------------------- Live
        tab("Live")
        el("#live-new").click()
        until(
            lambda: el("#live-room textarea, #live-room input").get_attribute("value") or "",
            30,
            "a live room",
        )
        el("#live-open").click()
        frame = until(lambda: el("#live-frame"), 60, "the viewer iframe")
        drv.switch_to.frame(frame)
        js = "const v = document.querySelector('video'); return v && [v.readyState, v.videoWidth];"
        until(lambda: (s := drv.execute_script(js)) and s[0] >= 2 and s[1] > 0, 60, "live video")
        drv.switch_to.default_content()
        el("#live-text textarea").send_keys("Hello from the demo page.")
        el("#live-say").click()
        until(
            lambda: '"duration"' in el("#live-out").text or "duration" in el("#live-out").text,
            60,
            "the avatar speaking",
        )
        drv.switch_to.frame(el("#live-frame"))
        playing = drv.execute_script(
            "const v = document.querySelector('video'); return !v.paused && v.currentTime > 0;"
        )
        drv.switch_to.default_content()
        assert playing
        drv.save_screenshot(str(shots / "live.png"))
        el("#live-audio input[type=file]").send_keys(str(speech))  # spoken once uploaded
        until(lambda: "10.6" in el("#live-out").text, 60, "the uploaded audio spoken")
        el("#live-interrupt").click()

        # ---------------------------------------------------------------- Avatars + language
        tab("Avatars")
        el("#av-prepare").click()  # nothing uploaded: from the bundled portrait
        until(
            lambda: "prepared" in (el("#av-status textarea").get_attribute("value") or ""),
            120,
            "the prepared avatar",
        )
        until(lambda: "alice" in el("#av-gallery").text, 30, "the avatar list")
        ids = [a["id"] for a in httpx.get(f"{api}/v1/avatars", timeout=30).json()["avatars"]]
        assert "alice" in ids
        until(lambda: el("#av-thumbs img"), 30, "the avatar's thumbnail")
        until(
            lambda: (
                "alice" in el("#av-pick").text
                or "alice" in str(el("#av-pick input").get_attribute("value"))
            ),
            30,
            "alice picked for deletion",
        )
        el("#av-delete").click()
        until(lambda: "alice" in el("#av-confirm-text").text, 30, "the confirmation")
        until(idle, 30, "the Avatars tab settled")
        drv.save_screenshot(str(shots / "avatars.png"))
        el("#av-confirm").click()
        until(
            lambda: "deleted" in (el("#av-status textarea").get_attribute("value") or ""),
            30,
            "the avatar deleted",
        )
        ids = [a["id"] for a in httpx.get(f"{api}/v1/avatars", timeout=30).json()["avatars"]]
        assert "alice" not in ids
        until(lambda: "alice" not in el("#av-gallery").text, 30, "the list refreshed")

        # ---------------------------------------------------------------- Chinese labels
        el("#lang input[value=zh]").click()
        tab("视频合成")
        until(lambda: "口型驱动引擎" in el("#engine").text, 30, "the engine radio in Chinese")
        until(lambda: "缺少权重" in el("#engine").text, 30, "musetalk's state in Chinese")
        until(lambda: radio("musetalk").get_attribute("disabled") is not None, 30, "still off")
        drv.execute_script("window.scrollTo(0, 0)")
        until(idle, 30, "the Render tab settled")
        drv.save_screenshot(str(shots / "render-zh.png"))

        # ---------------------------------------------------------------- offline
        entries = drv.execute_script(
            "return performance.getEntriesByType('resource')"
            ".map(e => [e.name, e.transferSize || 0])"
        )
        outside = [
            n for n, _ in entries if not n.startswith(("http://127.0.0.1:", "data:", "blob:"))
        ]
        assert not outside, outside
        timings["page_weight_kb"] = sum(s for _, s in entries) / 1024
        print(f"web figures: {timings}")
    finally:
        drv.save_screenshot(str(shots / "last.png"))  # where it stood (on a failure too)
        (shots / "last.txt").write_text(drv.find_element(By.TAG_NAME, "body").text)
        drv.quit()
