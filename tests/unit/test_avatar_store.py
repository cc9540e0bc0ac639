"""The avatar cache: atomic save, memory-mapped load, stale detection."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def assert_clean(root: Path, avatar_id: str, others: Sequence[str] = ()) -> None:
    """Exactly: the link ``<id>`` -> its one version ``.<id>@...``, the lock, ``others``."""
    names = sorted(x.name for x in root.iterdir())
    link = root / avatar_id
    assert link.is_symlink(), names
    version = os.readlink(link)
    assert version.startswith(f".{avatar_id}@") and (root / version).is_dir()
    assert names == sorted([avatar_id, version, f".{avatar_id}.lock", *others])


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
    # nothing but the avatar (a link to its one version) and its lock file is left behind
    assert_clean(tmp_path, "alice", others=["src.jpg"])


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
    assert_clean(tmp_path, "a")


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_avatar_folders_honour_the_umask(tmp_path: Path, mask: int) -> None:
    """Another user of a shared data root can read the avatar (mkdtemp made it 0700)."""
    old = os.umask(mask)
    try:
        AvatarStore(tmp_path / "avatars").save("a", _prepared(), source=None)
    finally:
        os.umask(old)
    folder = (tmp_path / "avatars" / "a").resolve()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f.name


def _as_plain_folder(root: Path, avatar_id: str) -> None:
    """Turn the link + version into a plain folder: the layout before versions."""
    link = root / avatar_id
    version = root / os.readlink(link)
    link.unlink()
    version.rename(link)


def test_a_plain_folder_is_read_and_replaced(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save("a", _prepared(2), source=None)
    _as_plain_folder(tmp_path, "a")
    # leftovers of the store before versions: a moved-aside folder and a mkdtemp folder
    (tmp_path / ".a.old-123-456").mkdir()
    (tmp_path / ".a.k2j3h4g5").mkdir()
    (tmp_path / ".a.b.k2j3h4g5").mkdir()  # not a's: id "a.b"
    assert store.load("a").n_frames == 2 and store.exists("a")
    store.save("a", _prepared(4), source=None)
    assert store.load("a").n_frames == 4
    assert_clean(tmp_path, "a", others=[".a.b.k2j3h4g5"])


def test_a_failed_switch_restores_the_plain_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AvatarStore(tmp_path)
    store.save("a", _prepared(2), source=None)
    _as_plain_folder(tmp_path, "a")
    real_replace = os.replace

    def full_disk(src: Any, dst: Any) -> None:
        if Path(dst) == tmp_path / "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save("a", _prepared(5), source=None)
    monkeypatch.undo()
    # the old folder was moved aside for the switch and is back in place, nothing else is left
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a").is_symlink()
    assert store.load("a").n_frames == 2
    assert sorted(x.name for x in tmp_path.iterdir()) == [".a.lock", "a"]


def test_a_load_waits_for_the_first_save_in_progress(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    started, result = threading.Event(), {}

    def load_later() -> None:
        started.wait(timeout=10)
        result["n"] = store.load("new").n_frames

    t = threading.Thread(target=load_later, daemon=True)
    t.start()
    with store._locked("new"):  # a save holds the lock; the avatar does not exist yet
        started.set()
        time.sleep(0.2)
        AvatarStore(tmp_path)._switch("new", _write_new_version(tmp_path, "new"))
    t.join(timeout=10)
    assert result == {"n": 3}


def _write_new_version(root: Path, avatar_id: str) -> Path:
    from digihuman.avatar.store import _write_version
    from digihuman.storage import make_unique_dir

    folder = make_unique_dir(root, f".{avatar_id}@")
    _write_version(folder, avatar_id, _prepared(3), None)
    return folder
