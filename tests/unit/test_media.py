"""Media I/O: audio decode and save, images with EXIF orientation, MP4 round trips (PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digihuman.errors import InputError, NotFoundError, TooLarge
from digihuman.media.audio import load_audio, resample, save_wav, slice_audio
from digihuman.media.video import (
    VideoWriter,
    iter_video,
    probe,
    read_image,
    read_source,
    read_video,
    write_video,
)

SR = 16000


def tone(seconds: float, rate: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes_stereo(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> None:
    import wave

    pcm = (np.stack([left, right], axis=1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


# ---------------------------------------------------------------- audio


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_wav_any_rate_decodes_to_16k_with_exact_length(tmp_path: Path, rate: int) -> None:
    x = tone(1.234, rate)
    save_wav(tmp_path / "a.wav", x, rate)
    y = load_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x) * SR / rate) <= 1
    # the 440 Hz tone survives: correlate with a reference tone generated at 16 kHz
    ref = tone(1.234, SR)
    mid = slice(800, len(y) - 800)
    corr = np.corrcoef(y[mid], ref[mid])[0, 1]
    assert corr > 0.99


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    left = tone(0.5, SR, amp=0.6)
    wav_bytes_stereo(tmp_path / "s.wav", left, np.zeros_like(left), SR)
    y = load_audio(tmp_path / "s.wav")
    assert len(y) == len(left)
    assert np.abs(y).max() == pytest.approx(0.3, abs=0.01)


def test_load_audio_other_rate(tmp_path: Path) -> None:
    save_wav(tmp_path / "a.wav", tone(0.5), SR)
    assert len(load_audio(tmp_path / "a.wav", sample_rate=24000)) == 12000


def test_missing_audio_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file_is_input_error(tmp_path: Path) -> None:
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(tmp_path / "e.wav")


def test_wav_without_samples_is_input_error(tmp_path: Path) -> None:
    save_wav(tmp_path / "z.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(InputError, match="contains no samples; give a recording with speech"):
        load_audio(tmp_path / "z.wav")


def test_garbage_file_is_input_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "g.mp3").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as err:
        load_audio(tmp_path / "g.mp3")
    assert "\n" not in str(err.value) and "g.mp3" in str(err.value)


def test_truncated_wav_keeps_what_is_there(tmp_path: Path) -> None:
    save_wav(tmp_path / "a.wav", tone(1.0), SR)
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "t.wav").write_bytes(data[: 44 + 2 * 8000])
    y = load_audio(tmp_path / "t.wav")
    assert len(y) == 8000


def test_image_is_not_audio(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "i.png")
    with pytest.raises(InputError, match="no audio track"):
        load_audio(tmp_path / "i.png")


def test_max_seconds_stops_decoding_with_too_large(tmp_path: Path) -> None:
    save_wav(tmp_path / "a.wav", tone(3.0), SR)
    assert len(load_audio(tmp_path / "a.wav", max_seconds=3.0)) == 3 * SR  # at the limit: fine
    with pytest.raises(TooLarge, match=r"a\.wav is longer than the 2\.5 s limit"):
        load_audio(tmp_path / "a.wav", max_seconds=2.5)
    # counted before resampling: 1 s at 8 kHz is 1 s, whatever the output rate
    save_wav(tmp_path / "b.wav", tone(1.0, 8000), 8000)
    assert len(load_audio(tmp_path / "b.wav", 48000, max_seconds=1.0)) == 48000
    # a header claiming 1 Hz: 4,000 samples are 4,000 s, refused before the resampler
    # would expand them 16,000 times
    save_wav(tmp_path / "c.wav", np.zeros(4000, np.float32), 1)
    with pytest.raises(TooLarge):
        load_audio(tmp_path / "c.wav", max_seconds=600)


def test_resample_and_slice() -> None:
    x = tone(1.0, 44100)
    y = resample(x, 44100, SR)
    assert y.dtype == np.float32 and len(y) == SR
    assert np.corrcoef(y[400:-400], tone(1.0)[400:-400])[0, 1] > 0.99
    assert resample(x, 44100, 44100) is not x
    assert len(slice_audio(y, SR, 0.25, 0.5)) == 4000
    assert len(slice_audio(y, SR, 0.9, 5.0)) == 1600
    assert len(slice_audio(y, SR, 0.5)) == 8000
    assert len(slice_audio(y, SR, 2.0, 3.0)) == 0


def test_save_wav_round_trip_and_clipping(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5, -0.5, 2.0, -2.0], np.float32)
    save_wav(tmp_path / "c.wav", x)
    y = load_audio(tmp_path / "c.wav")
    np.testing.assert_allclose(y, [0, 0.5, -0.5, 1, -1], atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["c.wav"]  # no temp file left


# ---------------------------------------------------------------- images


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half blue (stored orientation)
    arr[:, 20:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3) and out.dtype == np.uint8
    # after a 90° clockwise turn the stored left (red) is on top
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_read_image_rgba_and_grey(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 6), (10, 20, 30, 255)).save(tmp_path / "a.png")
    Image.new("L", (8, 6), 77).save(tmp_path / "g.png")
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [10, 20, 30]
    g = read_image(tmp_path / "g.png")
    assert g.shape == (6, 8, 3) and g[0, 0].tolist() == [77, 77, 77]


def test_read_image_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"cannot read image bad\.png"):
        read_image(tmp_path / "bad.png")


def _png_bomb(path: Path, width: int, height: int, *, data: bool = True) -> int:
    """A real 1-bit greyscale PNG of ``width`` x ``height`` zero pixels: the zlib stream of
    zero rows is a few KB, decoded to RGB it is ``3 * width * height`` bytes. ``data=False``
    writes the header alone (no pixel data at all). Returns the file's size."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey, no interlace
    idat = zlib.compress(bytes((width + 7) // 8 + 1) * height, 9) if data else b""
    body = chunk(b"IHDR", ihdr) + (chunk(b"IDAT", idat) if data else b"") + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path.stat().st_size


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    import time
    import tracemalloc

    from digihuman.media.video import MAX_IMAGE_PIXELS

    bomb = tmp_path / "bomb.png"
    assert _png_bomb(bomb, 8000, 8000) < 20_000  # 64 MP: 192 MB of RGB from a file of ~8 KB
    with Image.open(bomb) as im:  # a valid PNG, under PIL's own limit (no warning, no error)
        assert im.size == (8000, 8000) and MAX_IMAGE_PIXELS < 8000 * 8000
    tracemalloc.start()
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        read_image(bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(e.value) == (
        "image bomb.png is 8000x8000 (64.0 MP): over the 50 MP limit for one picture; "
        "give a smaller picture (scale it down)"
    )
    assert time.monotonic() - t0 < 0.5 and peak < 5 << 20  # nothing was decoded
    with pytest.raises(InputError, match="8000x8000"):  # the avatar path refuses it too
        read_source(bomb)
    _png_bomb(tmp_path / "header.png", 8000, 8000, data=False)  # a header and nothing else
    with pytest.raises(InputError, match="over the 50 MP limit"):
        read_image(tmp_path / "header.png")
    # past PIL's own guard (~179 MP) PIL refuses the header: the same clear InputError
    _png_bomb(tmp_path / "huge.png", 100_000, 100_000, data=False)
    with pytest.raises(InputError, match=r"huge\.png is larger than PIL opens.*50 MP limit"):
        read_image(tmp_path / "huge.png")


def test_the_pixel_limit_is_a_keyword(tmp_path: Path) -> None:
    Image.new("RGB", (40, 25), (1, 2, 3)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png", max_pixels=1000).shape == (25, 40, 3)  # at it
    with pytest.raises(InputError, match=r"40x25 \(0\.0 MP\): over the 0\.000999 MP limit"):
        read_image(tmp_path / "small.png", max_pixels=999)
    frames, _, _ = read_source(tmp_path / "small.png", max_pixels=None)
    assert frames.shape == (1, 25, 40, 3)
    with pytest.raises(InputError, match="limit"):
        read_source(tmp_path, max_pixels=999)  # a folder: each image is checked


def test_read_source_kinds(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        Image.new("RGB", (8, 6), (i, i, i)).save(tmp_path / f"f{i}.png")
    frames, fps, kind = read_source(tmp_path)
    assert kind == "images" and fps == 25.0 and frames.shape == (3, 6, 8, 3)
    assert [int(f[0, 0, 0]) for f in frames] == [1, 2, 10]  # natural sort
    frames, fps, kind = read_source(tmp_path / "f1.png")
    assert kind == "image" and frames.shape == (1, 6, 8, 3)
    (tmp_path / "x.xyz").write_bytes(b"abc")
    with pytest.raises(InputError, match="unsupported avatar source format"):
        read_source(tmp_path / "x.xyz")


# ---------------------------------------------------------------- video


def moving_frames(n: int, h: int = 64, w: int = 80) -> np.ndarray:
    """Frames with a bright square that moves: easy to check after lossy coding."""
    frames = np.full((n, h, w, 3), 40, np.uint8)
    for i in range(n):
        x = (i * 3) % (w - 16)
        frames[i, 20:36, x : x + 16] = (230, 200, 50)
    return frames


@pytest.mark.parametrize("seconds", [1.0, 1.234, 0.3])
def test_mp4_round_trip_streams_frames_and_audio(tmp_path: Path, seconds: float) -> None:
    n = round(seconds * 25)
    audio = tone(seconds)
    frames = moving_frames(n)
    out = tmp_path / "o.mp4"
    assert write_video(out, frames, 25, audio=audio) == n
    info = probe(out)
    assert (info.has_video, info.has_audio) == (True, True)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height, info.fps) == (80, 64, 25.0)
    assert info.audio_duration == pytest.approx(seconds, abs=0.04)
    back, fps = read_video(out)
    assert fps == 25.0 and back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 4
    y = load_audio(out)
    assert abs(len(y) - len(audio)) <= 0.04 * SR
    m = min(len(y), len(audio))
    assert np.corrcoef(y[:m], audio[:m])[0, 1] > 0.95  # same tone, aligned (no offset)
    assert out.read_bytes().find(b"moov") < out.read_bytes().find(b"mdat")  # +faststart
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]


def test_streamed_audio_in_pieces(tmp_path: Path) -> None:
    audio = tone(2.0, freq=330.0)
    frames = moving_frames(50)
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, len(audio)), 12, replace=False))
    pieces = np.split(audio, cuts)
    out = tmp_path / "s.mp4"
    with VideoWriter(out, 25, stream_audio=True) as w:
        w.add_audio(pieces[0])  # some audio before any frame
        for i, f in enumerate(frames):
            w.write(f)
            if i % 4 == 0 and i // 4 + 1 < len(pieces):
                w.add_audio(pieces[i // 4 + 1])
        assert w.audio_samples == len(audio)
    info = probe(out)
    assert info.audio_duration == pytest.approx(2.0, abs=0.04)
    y = load_audio(out)
    m = min(len(y), len(audio))
    assert abs(len(y) - len(audio)) <= 0.04 * SR
    assert np.corrcoef(y[:m], audio[:m])[0, 1] > 0.95
    with (
        pytest.raises(RuntimeError, match="no audio track"),
        VideoWriter(tmp_path / "x.mp4", 25) as w,
    ):
        w.add_audio(audio)


def test_odd_size_is_padded_to_even_and_video_only(tmp_path: Path) -> None:
    frames = moving_frames(5, 33, 47)
    with VideoWriter(tmp_path / "v.mp4", 30) as w:
        for f in frames:
            w.write(f)
    info = probe(tmp_path / "v.mp4")
    assert (info.width, info.height, info.has_audio, info.fps) == (48, 34, False, 30.0)
    assert len(list(iter_video(tmp_path / "v.mp4"))) == 5
    assert len(read_video(tmp_path / "v.mp4", max_frames=3)[0]) == 3


def test_writer_refuses_size_change_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="same size"), VideoWriter(out, 25) as w:
        w.write(moving_frames(1)[0])
        w.write(moving_frames(1, 32, 32)[0])
    assert list(tmp_path.iterdir()) == []


def test_writer_with_no_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "n.mp4", [], 25)
    assert list(tmp_path.iterdir()) == []


def test_ntsc_rate_round_trips(tmp_path: Path) -> None:
    write_video(tmp_path / "n.mp4", moving_frames(10), 30000 / 1001)
    assert probe(tmp_path / "n.mp4").fps == pytest.approx(29.97, abs=0.01)


def test_video_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_video(tmp_path / "none.mp4")
    (tmp_path / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(InputError):
        read_video(tmp_path / "c.mp4")
    save_wav(tmp_path / "a.wav", tone(0.2))
    with pytest.raises(InputError, match="no video track"):
        read_video(tmp_path / "a.wav")
