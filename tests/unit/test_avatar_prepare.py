"""Reading an avatar source: frames at the output fps, decoded one by one within the bounds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digihuman.avatar.prepare import load_source, resample_frames
from digihuman.errors import InputError
from digihuman.media.video import FrameStack, read_video, write_video


def numbered_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Frame i is a flat grey of level 4 * i: its index survives lossy coding."""
    return np.stack([np.full((h, w, 3), 4 * i, np.uint8) for i in range(n)])


def levels(frames: np.ndarray) -> list[int]:
    return [round(float(f.mean()) / 4) for f in frames]


@pytest.mark.parametrize(("src_fps", "n"), [(25.0, 30), (30.0, 40), (10.0, 12), (24.0, 31)])
def test_streamed_resampling_matches_resample_frames(
    tmp_path: Path, src_fps: float, n: int
) -> None:
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames(n), src_fps)
    whole, fps = read_video(path)
    expected = resample_frames(whole, fps, 25.0)
    frames, kind = load_source(path, 25.0)
    assert kind == "video"
    assert frames.shape == expected.shape
    assert levels(frames) == levels(expected)
    assert np.array_equal(frames, expected)


def test_video_is_cut_at_max_seconds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames(50), 25.0)
    with caplog.at_level(logging.WARNING):
        frames, _ = load_source(path, 25.0, max_seconds=1.0)
    assert levels(frames) == list(range(25))
    assert "longer than 1 s" in caplog.text
    # a source exactly at the limit is not cut
    caplog.clear()
    frames, _ = load_source(path, 25.0, max_seconds=2.0)
    assert len(frames) == 50 and "longer" not in caplog.text


def test_video_is_cut_at_the_byte_budget(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames(40), 25.0)
    frame_bytes = 32 * 48 * 3
    with caplog.at_level(logging.WARNING):
        frames, _ = load_source(path, 25.0, max_bytes=10 * frame_bytes + 5)
    assert levels(frames) == list(range(10))
    assert "MiB limit" in caplog.text
    with pytest.raises(InputError, match="one frame alone"):
        load_source(path, 25.0, max_bytes=frame_bytes - 1)


def test_image_folder_is_cut_and_still_checked(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (8, 6), (4 * i,) * 3).save(folder / f"f{i}.png")
    frames, kind = load_source(folder, 25.0, max_bytes=4 * 8 * 6 * 3)
    assert kind == "images" and levels(frames) == [0, 1, 2, 3]
    frames, _ = load_source(folder, 25.0, max_seconds=3 / 25)
    assert levels(frames) == [0, 1, 2]
    Image.new("RGB", (9, 6)).save(folder / "f9.png")
    with pytest.raises(InputError, match="same size"):
        load_source(folder, 25.0)
    with pytest.raises(InputError, match="one frame alone"):
        load_source(folder / "f0.png", 25.0, max_bytes=10)


def test_frame_stack_bounds_and_growth() -> None:
    f = np.zeros((2, 3, 3), np.uint8)
    bounded = FrameStack(max_frames=3)
    assert all(bounded.add(f + i) for i in range(3))
    assert not bounded.add(f) and bounded.n == 3
    assert [int(x[0, 0, 0]) for x in bounded.array()] == [0, 1, 2]
    grow = FrameStack()
    for i in range(40):
        assert grow.add(f + i)
    assert [int(x[0, 0, 0]) for x in grow.array()] == list(range(40))
    with pytest.raises(ValueError, match="first is 3x2"):
        grow.add(np.zeros((3, 3, 3), np.uint8))
    # a nearly empty bounded buffer hands back a right-sized copy, not the whole reservation
    short = FrameStack(max_bytes=1 << 30)
    short.add(f)
    arr = short.array()
    assert arr.shape == (1, 2, 3, 3) and (arr.base is None or arr.base.nbytes < 1 << 20)
