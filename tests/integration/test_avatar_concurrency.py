"""The avatar store under real processes: racing saves and loads of one id, a save that hits a
write error, a save killed mid-write. Readers must see a whole old or new version, never an
error; nothing but the current version may be left behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digihuman.avatar.store import AvatarStore
from digihuman.engines.base import PreparedAvatar

CTX = mp.get_context("fork")
AVATAR = "alice"


def marked(marker: int, *, n: int | None = None, size: int = 8) -> PreparedAvatar:
    """Every array says ``marker``, and the frame count depends on it: a load that mixed two
    versions (frames of one, landmarks or manifest of another) is detected."""
    n = 2 + marker % 5 if n is None else n
    return PreparedAvatar(
        engine="fake",
        fps=25.0,
        frames=np.full((n, size, size, 3), marker % 251, np.uint8),
        arrays={"landmarks": np.full((n, 468, 2), float(marker), np.float32)},
        meta={"marker": marker},
    )


def check(p: PreparedAvatar) -> int:
    marker = int(p.meta["marker"])
    assert p.n_frames == len(p.arrays["landmarks"])
    assert np.all(p.frames == marker % 251), "frames from another version"
    assert np.all(p.arrays["landmarks"] == float(marker)), "landmarks from another version"
    return marker


def saver(root: str, base: int, seconds: float, out: Any) -> None:
    store = AvatarStore(Path(root))
    errors, i = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        i += 1
        try:
            store.save(AVATAR, marked(base + i), source=None)
            check(store.load(AVATAR))
        except Exception as exc:
            errors.append(f"save {base + i}: {type(exc).__name__}: {exc}")
    out.put(("saves", errors, i))


def reader(root: str, seconds: float, out: Any) -> None:
    store = AvatarStore(Path(root))
    errors, loads = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            check(store.load(AVATAR))
            store.manifest(AVATAR)
            loads += 1
        except Exception as exc:
            errors.append(f"load: {type(exc).__name__}: {exc}")
    out.put(("loads", errors, loads))


def leftovers(root: Path) -> list[str]:
    """Everything in the store but the link, its current version and the lock file."""
    link = root / AVATAR
    keep = {AVATAR, f".{AVATAR}.lock"} | ({os.readlink(link)} if link.is_symlink() else set())
    return sorted(x.name for x in root.iterdir() if x.name not in keep)


def test_racing_saves_and_loads_of_one_id(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save(AVATAR, marked(0), source=None)
    out = CTX.Queue()
    root = str(tmp_path)
    procs = [CTX.Process(target=saver, args=(root, 10_000 * k, 1.5, out)) for k in (1, 2, 3)]
    procs += [CTX.Process(target=reader, args=(root, 1.5, out)) for _ in (0, 1)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [e for _, errs, _ in results for e in errs]
    assert errors == [], (len(errors), errors[:5])
    # they did overlap: every process got through (saves of one id take turns, unordered)
    saves = [n for role, _, n in results if role == "saves"]
    loads = [n for role, _, n in results if role == "loads"]
    assert min(saves) >= 1 and sum(saves) >= 30 and min(loads) >= 10, results
    assert check(store.load(AVATAR)) >= 10_000  # one of the savers' versions won
    assert leftovers(tmp_path) == []
    assert [a.avatar_id for a in store.list_avatars()] == [AVATAR]


def save_with_file_size_limit(root: str, limit: int, kill: bool, out: Any) -> None:
    """Save an avatar bigger than RLIMIT_FSIZE allows: the kernel refuses the write (EFBIG),
    or, with SIGXFSZ at its default action, kills the process in the middle of np.save."""
    if kill:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        AvatarStore(Path(root)).save(AVATAR, marked(7, n=40, size=64), source=None)
        out.put("saved")
    except OSError as exc:
        out.put(f"OSError: {exc}")


@pytest.mark.parametrize("kill", [False, True], ids=["write-error", "killed"])
def test_a_save_that_fails_midway_leaves_the_old_version(tmp_path: Path, kill: bool) -> None:
    store = AvatarStore(tmp_path)
    store.save(AVATAR, marked(3), source=None)
    out = CTX.Queue()
    # frames.npy of the new version is 40 * 64 * 64 * 3 = 480 KiB: over the 64 KiB limit
    p = CTX.Process(target=save_with_file_size_limit, args=(str(tmp_path), 64 << 10, kill, out))
    p.start()
    p.join(timeout=30)
    if kill:
        assert p.exitcode == -signal.SIGXFSZ  # killed by the kernel mid-write
    else:
        said = out.get(timeout=5)
        assert p.exitcode == 0 and said.startswith("OSError"), said
        assert leftovers(tmp_path) == []  # the failed version was removed
    assert check(store.load(AVATAR)) == 3  # the old version, whole
    if kill:
        stray = leftovers(tmp_path)
        assert len(stray) == 1 and stray[0].startswith(f".{AVATAR}@")  # the half version
        assert store.sweep() == 1
    assert leftovers(tmp_path) == []
    store.save(AVATAR, marked(4), source=None)
    assert check(store.load(AVATAR)) == 4 and leftovers(tmp_path) == []
