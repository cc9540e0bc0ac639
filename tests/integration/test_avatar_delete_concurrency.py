"""Delete under real processes: saves, deletes and loads of one id racing. A load sees a whole
version or no avatar (NotFoundError), never a damaged one; a reader in another process that
mapped a version before the delete keeps reading it; at the end the id is a complete avatar or
absent, with nothing else of it left behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from digihuman.avatar.store import AvatarStore
from digihuman.engines.base import PreparedAvatar
from digihuman.errors import NotFoundError

CTX = mp.get_context("fork")
AVATAR = "alice"


def marked(marker: int) -> PreparedAvatar:
    n = 2 + marker % 5  # a load mixing two versions is detected by the count or the values
    return PreparedAvatar(
        engine="fake",
        fps=25.0,
        frames=np.full((n, 8, 8, 3), marker % 251, np.uint8),
        arrays={"landmarks": np.full((n, 468, 2), float(marker), np.float32)},
        meta={"marker": marker},
    )


def check(p: PreparedAvatar) -> int:
    marker = int(p.meta["marker"])
    assert p.n_frames == len(p.arrays["landmarks"]) == 2 + marker % 5
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
        except Exception as exc:
            errors.append(f"save {base + i}: {type(exc).__name__}: {exc}")
        time.sleep(0.01)  # the lock is polled: a saver in a tight loop would starve the deleter
    out.put(("saves", errors, i))


def deleter(root: str, seconds: float, out: Any) -> None:
    store = AvatarStore(Path(root))
    errors, deleted = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            store.delete(AVATAR)
            deleted += 1
        except NotFoundError:
            pass
        except Exception as exc:
            errors.append(f"delete: {type(exc).__name__}: {exc}")
        time.sleep(0.002)
    out.put(("deletes", errors, deleted))


def reader(root: str, seconds: float, out: Any) -> None:
    store = AvatarStore(Path(root))
    errors, loads, absent = [], 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            check(store.load(AVATAR))
            loads += 1
        except NotFoundError:
            absent += 1
        except Exception as exc:  # StaleAvatarError ("damaged"), a mixed version, ...
            errors.append(f"load: {type(exc).__name__}: {exc}")
    out.put(("loads", errors, (loads, absent)))


def test_racing_saves_deletes_and_loads(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save(AVATAR, marked(0), source=None)
    out = CTX.Queue()
    root = str(tmp_path)
    procs = [CTX.Process(target=saver, args=(root, 10_000 * k, 1.5, out)) for k in (1, 2)]
    procs += [CTX.Process(target=deleter, args=(root, 1.5, out))]
    procs += [CTX.Process(target=reader, args=(root, 1.5, out)) for _ in (0, 1)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [e for _, errs, _ in results for e in errs]
    assert errors == [], (len(errors), errors[:5])
    by_role: dict[str, list[Any]] = {}
    for role, _, n in results:
        by_role.setdefault(role, []).append(n)
    # they overlapped: saves and deletes both happened, readers saw avatars and no avatar
    assert min(by_role["saves"]) >= 5 and by_role["deletes"][0] >= 3, results
    assert sum(n[0] for n in by_role["loads"]) >= 5, results
    assert sum(n[1] for n in by_role["loads"]) >= 1, results
    # the end state: a complete avatar or none, and nothing else of the id
    names = {x.name for x in tmp_path.iterdir()}
    if (tmp_path / AVATAR).is_symlink():
        assert check(store.load(AVATAR)) >= 10_000
        assert names == {AVATAR, os.readlink(tmp_path / AVATAR), f".{AVATAR}.lock"}
    else:
        assert names == {f".{AVATAR}.lock"}
        assert store.list_avatars() == []


def mapped_reader(root: str, ready: Any, go: Any, out: Any) -> None:
    loaded = AvatarStore(Path(root)).load(AVATAR)  # memory-mapped
    ready.set()
    go.wait(30)
    try:
        out.put(check(loaded))  # after the delete: the same arrays, still readable
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_a_reader_process_that_mapped_a_version_survives_its_delete(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path)
    store.save(AVATAR, marked(3), source=None)
    ready, go, out = CTX.Event(), CTX.Event(), CTX.Queue()
    p = CTX.Process(target=mapped_reader, args=(str(tmp_path), ready, go, out))
    p.start()
    assert ready.wait(30)
    store.delete(AVATAR)
    assert sorted(x.name for x in tmp_path.iterdir()) == [f".{AVATAR}.lock"]
    go.set()
    assert out.get(timeout=30) == 3
    p.join(timeout=30)
    assert p.exitcode == 0
