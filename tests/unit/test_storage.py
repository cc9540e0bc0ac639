"""The data root: seed layout, path confinement, atomic outputs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from digihuman.errors import NotFoundError, PathOutsideDataRoot
from digihuman.storage import SEED_DIRS, DataRoot, atomic_output, make_unique_dir


@pytest.fixture
def root(tmp_path: Path) -> DataRoot:
    return DataRoot(tmp_path / "root").ensure()


def test_seed_layout(root: DataRoot) -> None:
    for d in SEED_DIRS:
        assert (root.root / d).is_dir()


@pytest.mark.parametrize(
    "good", ["tests/a.wav", "results/output/x.mp4", "./tests/a.wav", "tests//a.wav", "audios"]
)
def test_resolve_inside(root: DataRoot, good: str) -> None:
    p = root.resolve(good)
    assert root.root in p.parents or p == root.root


BAD = [
    "../etc/passwd",
    "tests/../../etc/passwd",
    "/etc/passwd",
    "~/x",
    "tests/..",
    "..",
    "tests\\..\\..\\x",
    "a\x00b",
    "",
    "results/../../x",
]


@pytest.mark.parametrize("bad", BAD)
def test_resolve_refuses(root: DataRoot, bad: str) -> None:
    with pytest.raises(PathOutsideDataRoot):
        root.resolve(bad)


def test_symlink_escape_refused(root: DataRoot, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    os.symlink(outside, root.root / "tests" / "link")
    with pytest.raises(PathOutsideDataRoot):
        root.resolve("tests/link/secret.txt")


def test_must_exist(root: DataRoot) -> None:
    with pytest.raises(NotFoundError):
        root.resolve("tests/missing.wav", must_exist=True)


def test_atomic_output_success_and_failure(tmp_path: Path) -> None:
    final = tmp_path / "out" / "a.mp4"
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"ok")
        assert not final.exists()
    assert final.read_bytes() == b"ok"

    final2 = tmp_path / "out" / "b.mp4"
    with pytest.raises(RuntimeError), atomic_output(final2) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert not final2.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == ["a.mp4"]


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    mask: int = request.param
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o002], indirect=True)
def test_atomic_output_honours_the_umask(tmp_path: Path, umask: int) -> None:
    """An output gets the mode a plain open() would give (mkstemp's 0600 did not)."""
    final = tmp_path / "out" / "a.mp4"
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"ok")
    plain = tmp_path / "out" / "plain.mp4"
    plain.write_bytes(b"ok")
    expected = 0o666 & ~umask
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    assert stat.S_IMODE(final.stat().st_mode) == expected
    # a failed write still leaves nothing behind
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out" / "b.mp4") as tmp:
        raise RuntimeError("boom")
    assert sorted(p.name for p in final.parent.iterdir()) == ["a.mp4", "plain.mp4"]


@pytest.mark.parametrize("umask", [0o022, 0o002], indirect=True)
def test_make_unique_dir_honours_the_umask(tmp_path: Path, umask: int) -> None:
    a, b = make_unique_dir(tmp_path, ".x."), make_unique_dir(tmp_path, ".x.")
    assert a != b and a.name.startswith(".x.")
    assert stat.S_IMODE(a.stat().st_mode) == 0o777 & ~umask
