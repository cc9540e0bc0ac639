"""Headless Chromium helpers for the live viewer tests (Debian's chromium + chromedriver driven by
Selenium; no browser is downloaded): start the browser, wait for the page's video, screenshot
the video element, and check by pixels that it shows the room's face speaking."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="Debian's chromium + chromedriver are not installed (scripts/install.sh installs them)",
)


@contextlib.contextmanager
def chromium(size: int = 700) -> Iterator[Any]:
    """A headless Chromium that autoplays muted video and offers plain host ICE candidates."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={size},{size}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns",  # plain host candidates on loopback
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def wait_video(drv: Any, *, ready: int = 2, width: int = 512, timeout: float = 30.0) -> None:
    """Until the page's ``<video id="v">`` has ``readyState >= ready`` and a picture; asserts
    its width (the room's 512 px portrait)."""
    js = "const v = document.getElementById('v'); return [v.readyState, v.videoWidth];"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, w = drv.execute_script(js)
        if got >= ready and w > 0:
            break
        time.sleep(0.1)
    state = drv.execute_script("return document.getElementById('s').textContent")
    assert got >= ready and w == width, (got, w, state)


def video_shots(drv: Any, n: int = 6, every: float = 0.3) -> list[np.ndarray]:
    """``n`` screenshots of the video element, ``every`` seconds apart, each cropped to the
    element and resized to 512×512 RGB."""
    import cv2

    rect = drv.execute_script(
        "const r = document.getElementById('v').getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, window.devicePixelRatio];"
    )
    x, y, w, h, dpr = (float(v) for v in rect)
    shots = []
    for _ in range(n):
        png = np.frombuffer(drv.get_screenshot_as_png(), np.uint8)
        img = cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        crop = img[int(y * dpr) : int((y + h) * dpr), int(x * dpr) : int((x + w) * dpr)]
        shots.append(cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA))
        time.sleep(every)
    return shots


# the mouth of the data root's seed portrait (data/portrait.jpg, 512×512): its lip landmarks
# (face mesh 61, 291, 0, 17) lie within x 199-247, y 138-154
MOUTH = (slice(125, 175), slice(185, 260))


def assert_face_speaking(
    shots: list[np.ndarray], portrait: Path, mouth: tuple[slice, slice] = MOUTH
) -> list[float]:
    """The screenshots show the portrait (up to compression) and its mouth region changes
    between them (the room speaks); returns the mouth changes."""
    from digihuman.media.video import read_image

    face = read_image(portrait)
    diff = np.abs(shots[0].astype(np.int16) - face.astype(np.int16)).mean()
    assert diff < 20, f"the viewer does not show the room's face (mean abs diff {diff:.1f})"
    changes = [
        float(np.abs(a[mouth].astype(np.int16) - b[mouth].astype(np.int16)).mean())
        for a, b in itertools.pairwise(shots)
    ]
    assert max(changes) > 2.0, changes
    return changes
