"""The avatar cache: atomic save, memory-mapped load, stale detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digihuman.avatar.store import AvatarStore, StaleAvatarError
from digihuman.engines.base import PreparedAvatar
from digihuman.errors import InputError, NotFoundError


def _prepared(n: int = 3) -> PreparedAvatar:
    rng = np.random.default_rng(0)
    return PreparedAvatar(
        engine="fake",
        fps=25.0,
        frames=rng.integers(0, 255, (n, 16, 20, 3), dtype=np.uint8),
        arrays={"landmarks": rng.random((n, 468, 2), dtype=np.float32)},
        meta={"fingerprint": {"engine": "fake", "version": 1, "fps": 25.0}},
    )


def test_round_trip(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    src = tmp_path / "src.jpg"
    src.write_bytes(b"abc")
    p = _prepared()
    store.save("alice", p, source=src)
    back = store.load("alice")
    assert back.engine == "fake" and back.fps == 25.0 and back.n_frames == 3
    assert np.array_equal(back.frames, p.frames)
    assert np.array_equal(back.arrays["landmarks"], p.arrays["landmarks"])
    assert [a.avatar_id for a in store.list_avatars()] == ["alice"]
    # nothing but the final folder is left behind
    assert sorted(x.name for x in tmp_path.iterdir()) == ["alice", "src.jpg"]


def test_stale_on_changed_source_and_settings(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    src = tmp_path / "src.jpg"
    src.write_bytes(b"abc")
    p = _prepared()
    store.save("a", p, source=src)
    m = store.manifest("a")
    fp = p.meta["fingerprint"]
    assert store.staleness(m, engine="fake", meta={"fingerprint": fp}) == []
    assert store.staleness(m, engine="lite", meta={"fingerprint": fp})
    changed = {**fp, "version": 2}
    assert any(
        "fingerprint" in r for r in store.staleness(m, engine="fake", meta={"fingerprint": changed})
    )
    src.write_bytes(b"abd")
    assert any("source" in r for r in store.staleness(m, engine="fake", meta={"fingerprint": fp}))


def test_damaged_and_missing(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    with pytest.raises(NotFoundError, match="avatar prepare"):
        store.load("nobody")
    store.save("a", _prepared(), source=None)
    (tmp_path / "a" / "landmarks.npy").write_bytes(b"garbage")
    with pytest.raises(StaleAvatarError, match="prepare it again"):
        store.load("a")
    (tmp_path / "a" / "manifest.json").write_text("{not json")
    with pytest.raises(StaleAvatarError):
        store.load("a")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 65, "a b"])
def test_bad_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError):
        AvatarStore(tmp_path).path(bad)


def test_overwrite_is_atomic(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save("a", _prepared(2), source=None)
    store.save("a", _prepared(5), source=None)
    assert store.load("a").n_frames == 5
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["n_frames"] == 5
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a"]
