"""AvatarStore.delete: the link goes first, then the versions; mapped readers keep working."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digihuman.avatar.store import AvatarBusyError, AvatarStore
from digihuman.engines.base import PreparedAvatar
from digihuman.errors import InputError, NotFoundError


def _prepared(value: int = 7, n: int = 3) -> PreparedAvatar:
    return PreparedAvatar(
        engine="fake",
        fps=25.0,
        frames=np.full((n, 16, 20, 3), value, np.uint8),
        arrays={"landmarks": np.full((n, 468, 2), float(value), np.float32)},
        meta={"marker": value},
    )


def test_delete_removes_link_and_versions_but_not_the_source(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path / "avatars")
    src = tmp_path / "upload.jpg"
    src.write_bytes(b"jpeg")
    store.save("alice", _prepared(), source=src)
    store.save("alice", _prepared(8), source=src)  # a second version replaced the first
    store.save("bob", _prepared(9), source=None)
    store.delete("alice")
    names = sorted(x.name for x in (tmp_path / "avatars").iterdir())
    # the lock file stays (a save waiting on it must not race a save that made a new one)
    assert names == sorted(["bob", os.readlink(tmp_path / "avatars" / "bob"), ".alice.lock",
                            ".bob.lock"])  # fmt: skip
    assert src.read_bytes() == b"jpeg"
    assert [a.avatar_id for a in store.list_avatars()] == ["bob"]
    with pytest.raises(NotFoundError):
        store.load("alice")
    with pytest.raises(NotFoundError):
        store.delete("alice")
    # the id can be used again
    store.save("alice", _prepared(10), source=None)
    assert store.load("alice").meta["marker"] == 10


def test_delete_of_unknown_and_invalid_ids(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    with pytest.raises(NotFoundError):
        store.delete("nobody")
    assert list(tmp_path.iterdir()) == []  # an unknown id leaves no lock file behind
    for bad in ("", "../x", "a/b", ".hidden", "x" * 65, "a@b"):
        with pytest.raises(InputError):
            store.delete(bad)


def test_delete_of_a_pre_version_plain_folder(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save("old", _prepared(), source=None)
    # turn it into the layout before versions: a plain folder at <id>
    version = tmp_path / os.readlink(tmp_path / "old")
    (tmp_path / "old").unlink()
    version.rename(tmp_path / "old")
    assert store.load("old").meta["marker"] == 7
    store.delete("old")
    assert sorted(x.name for x in tmp_path.iterdir()) == [".old.lock"]


def test_a_reader_that_mapped_the_arrays_keeps_reading_them(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save("alice", _prepared(42, n=50), source=None)
    loaded = store.load("alice")  # memory-mapped, read-only
    assert isinstance(loaded.frames, np.memmap)
    with open(tmp_path / os.readlink(tmp_path / "alice") / "manifest.json") as opened:
        store.delete("alice")
        assert not (tmp_path / "alice").exists()
        # Linux: the files are gone from the folder, the mapping and the open file are not
        assert opened.read().startswith("{")
    assert int(loaded.frames.sum()) == 42 * loaded.frames.size
    assert np.all(loaded.arrays["landmarks"] == 42.0)


def test_delete_waits_for_a_save_of_the_same_id(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save("alice", _prepared(1), source=None)
    entered, release = threading.Event(), threading.Event()

    def slow_save() -> None:
        with store._locked("alice"):  # a save in progress holds the id's lock
            entered.set()
            release.wait(10)

    t = threading.Thread(target=slow_save)
    t.start()
    entered.wait(10)
    with pytest.raises(AvatarBusyError):
        store.delete("alice", timeout=0.2)
    assert store.load("alice").meta["marker"] == 1  # untouched
    t0 = time.monotonic()
    threading.Timer(0.3, release.set).start()
    store.delete("alice", timeout=10)
    assert time.monotonic() - t0 >= 0.25
    t.join()
    assert store.list_avatars() == []
