"""Render jobs choosing their engine and bbox_shift through the real API and a render worker
(MuseTalk on tiny random weights, CPU), the avatar cache keyed on what the choice changes, and
deleting the avatar; then the curl examples of docs/api.md's demo-page section, run as written."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from digihuman.timing import frame_count

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from digihuman.engines.lipsync.musetalk import random_weights as RW

    d = tmp_path_factory.mktemp("tiny-models")
    RW.write_layout(d, "v1", size="tiny")
    return d


def _stack(redis_url: str, root: Path, procs: Any, helpers: Any, **extra: str) -> Any:
    import httpx

    env = helpers.service_env(
        redis_url,
        root,
        DIGIHUMAN_JOBS__KINDS='["render"]',
        DIGIHUMAN_MUSETALK__DEVICE="cpu",
        DIGIHUMAN_MUSETALK__BATCH_SIZE="4",
        DIGIHUMAN_MUSETALK__BLEND_WORKERS="1",
        OMP_NUM_THREADS="1",  # tiny models: one torch thread is several times faster on a
        MKL_NUM_THREADS="1",  # busy machine (45 s → 6 s for 38 frames at load 11)
        **extra,
    )
    api = procs.api(env)  # first: the worker's imports (torch) slow a loaded machine down
    procs.worker("render", env)
    helpers.wait_ready(redis_url, "render", timeout=120)
    return httpx.Client(base_url=api, timeout=120), api


def _render(c: Any, **body: Any) -> dict[str, Any]:
    r = c.post("/v1/render", json=body)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 180
    while True:  # waits are bounded by api.max_wait_s
        rec = c.get(f"/v1/jobs/{r.json()['id']}", params={"wait": 30}).json()
        if rec["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
    assert rec["status"] == "done", rec
    return dict(rec["result"])


def test_engine_and_bbox_shift_per_render_and_avatar_delete(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any, tiny_models: Path, speech_16k
) -> None:
    from digihuman.media.audio import save_wav
    from digihuman.media.video import probe

    root = tmp_path / "root"
    shutil.copytree(tiny_models, root / "models")
    (root / "tests").mkdir(parents=True)
    shutil.copyfile(str(resources.files("digihuman.assets") / "portrait.jpg"),
                    root / "tests" / "me.jpg")  # fmt: skip
    audio = speech_16k[16000 : 16000 + 12800]  # 0.8 s of speech
    save_wav(root / "tests" / "hi.wav", audio, 16000)
    c, _ = _stack(redis_url, root, procs, helpers)
    frames = frame_count(len(audio), 16000, 25.0)

    # lite takes no bbox_shift: accepted, reported as not applied
    res = _render(c, source="tests/me.jpg", audio="tests/hi.wav", avatar_id="ava", bbox_shift=5)
    assert res["engine"] == "lite" and res["bbox_shift"] is None
    assert res["ignored"] == ["bbox_shift"] and res["frames"] == frames
    manifest = c.get("/v1/avatars").json()["avatars"][0]["manifest"]
    assert manifest["engine"] == "lite"

    # MuseTalk with a shift, on the avatar id only: the lite avatar is not reused, it is
    # prepared again from its recorded source for this engine and shift
    res = _render(c, audio="tests/hi.wav", avatar_id="ava", engine="musetalk", bbox_shift=5)
    assert res["engine"] == "musetalk" and res["bbox_shift"] == 5 and "ignored" not in res
    assert any("engine" in why for why in res["avatar_refreshed"]), res
    assert res["frames"] == frames
    info = probe(root / res["path"])
    assert info.has_video and info.has_audio and info.n_frames == frames
    (ava,) = c.get("/v1/avatars").json()["avatars"]
    assert ava["manifest"]["engine"] == "musetalk" and ava["source"] == "tests/me.jpg"
    assert ava["manifest"]["meta"]["fingerprint"]["bbox_shift"] == 5

    # another shift changes the prepared crop: prepared again; the same shift again: reused
    res = _render(c, audio="tests/hi.wav", avatar_id="ava", engine="musetalk", bbox_shift=-5)
    assert res["bbox_shift"] == -5
    assert any("bbox_shift" in why for why in res["avatar_refreshed"]), res
    t0 = time.monotonic()
    res = _render(c, audio="tests/hi.wav", avatar_id="ava", engine="musetalk", bbox_shift=-5)
    assert res["bbox_shift"] == -5 and "avatar_refreshed" not in res
    cached_s = time.monotonic() - t0

    # delete: gone from the list, the upload it came from stays
    r = c.delete("/v1/avatars/ava")
    assert r.status_code == 200 and r.json() == {"deleted": "ava"}
    assert c.get("/v1/avatars").json()["avatars"] == []
    assert (root / "tests" / "me.jpg").is_file()
    r = c.delete("/v1/avatars/ava")
    assert r.status_code == 404 and "ava" in r.json()["message"]
    assert c.delete("/v1/avatars/no%20such").status_code == 400
    r = c.post("/v1/render", json={"audio": "tests/hi.wav", "avatar_id": "ava"})
    assert r.status_code == 404 and "no prepared avatar 'ava'" in r.json()["message"], r.text
    print(f"musetalk (tiny, cpu) render of 0.8 s with a cached avatar: {cached_s:.2f} s")


def test_the_demo_page_calls_in_docs_api_md(
    redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    """The bash block of docs/api.md's "The demo page's calls", against a real API + worker."""
    root = tmp_path / "root"
    (root / "tests").mkdir(parents=True)
    _, api = _stack(redis_url, root, procs, helpers)
    doc = (REPO / "docs" / "api.md").read_text()
    block = doc.split("### The demo page's calls")[1].split("```bash\n")[1].split("```")[0]
    run = subprocess.run(
        ["bash", "-c", "set -e\n" + block],
        cwd=REPO,
        env={**os.environ, "API": api},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, (run.stdout, run.stderr)
    out = run.stdout
    assert '"status":"done"' in out and "}422\n" in out, out
    assert '"avatars":' in out and '"lipsync":' in out, out
    assert '"engine":"lite","bbox_shift":null,"ignored":["bbox_shift"]' in out, out
    assert '{"deleted":"demo"}' in out, out
