"""Images and video: read frames (RGB uint8) with their fps; write H.264 + AAC MP4 in-process.

Reading and writing go through PyAV (FFmpeg's libraries in-process): frames are piped straight
into the encoder, never through PNG files. Output MP4s are H.264 (yuv420p, even dimensions)
plus AAC audio in the same container, with ``+faststart`` so they play while downloading.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from digihuman.errors import InputError
from digihuman.media._files import existing_file
from digihuman.types import SAMPLE_RATE, SourceKind

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".flv", ".gif"})
DEFAULT_FPS = 25.0

_IMAGE_HINT = "give a jpg, png, bmp, webp or tiff image"
_VIDEO_HINT = "give an mp4, mov, mkv, webm or avi video"


# --------------------------------------------------------------------------- reading


MAX_IMAGE_PIXELS = 50_000_000
"""Pixels one image may declare (50 MP: a full-resolution 48/50 MP phone photo, 8160x6120, is
accepted; decoded it is 150 MB of RGB). Checked on the header, before decoding: a file of a few
hundred bytes can declare a size that takes gigabytes once decoded, and PIL's own guard only
stops at ~179 MP (537 MB of RGB, several times that while converting)."""


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB with its EXIF orientation applied.

    An image whose header declares more than ``max_pixels`` pixels is refused with
    :class:`~digihuman.errors.InputError` before any pixel is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = existing_file(path, "image")
    try:
        with Image.open(p) as opened:
            w, h = opened.size
            if max_pixels is not None and w * h > max_pixels:
                size = f"{w}x{h} ({w * h / 1e6:.1f} MP)"
                raise InputError(_too_many_pixels(p.name, size, max_pixels))
            im = ImageOps.exif_transpose(opened)
            if im.mode in ("RGBA", "LA", "P", "PA"):
                rgba = im.convert("RGBA")  # transparent areas become white
                im = Image.new("RGB", rgba.size, (255, 255, 255))
                im.paste(rgba, mask=rgba.getchannel("A"))
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # PIL refused the header itself (> ~179 MP)
        size = f"larger than PIL opens ({exc})"
        raise InputError(_too_many_pixels(p.name, size, max_pixels)) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {p.name} ({exc}); {_IMAGE_HINT}") from exc
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image {p.name} has no pixels; {_IMAGE_HINT}")
    return np.ascontiguousarray(arr)


def _too_many_pixels(name: str, size: str, limit: int | None) -> str:
    limit_text = "" if limit is None else f": over the {limit / 1e6:g} MP limit for one picture"
    return f"image {name} is {size}{limit_text}; give a smaller picture (scale it down)"


def _stream_fps(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return DEFAULT_FPS


class FrameStack:
    """(H, W, 3) uint8 frames of one size gathered into one (N, H, W, 3) array.

    With ``max_frames`` and/or ``max_bytes`` the array is allocated once, at that bound, on the
    first frame (the kernel commits pages only as frames are written), so memory can never pass
    the bound and there is no list-then-``np.stack`` copy; :meth:`add` returns False once the
    next frame would not fit. Without bounds the array grows by doubling.
    """

    def __init__(self, *, max_frames: int | None = None, max_bytes: int | None = None) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.n = 0
        self._buf: np.ndarray | None = None
        self._bounded = max_frames is not None or max_bytes is not None

    def capacity(self, frame_bytes: int) -> int | None:
        """How many frames of ``frame_bytes`` fit the bounds (None: unbounded)."""
        caps = []
        if self.max_frames is not None:
            caps.append(max(0, self.max_frames))
        if self.max_bytes is not None:
            caps.append(max(0, self.max_bytes) // max(1, frame_bytes))
        return min(caps) if caps else None

    @property
    def frame_shape(self) -> tuple[int, ...] | None:
        return None if self._buf is None else tuple(self._buf.shape[1:])

    def add(self, img: np.ndarray) -> bool:
        """Append ``img``; False (and nothing added) when it would pass a bound.

        Raises ValueError when ``img`` has another size than the first frame.
        """
        if self._buf is None:
            cap = self.capacity(img.nbytes)
            if cap == 0:
                return False
            self._buf = np.empty((cap if cap is not None else 16, *img.shape), np.uint8)
        elif img.shape != self._buf.shape[1:]:
            h0, w0 = self._buf.shape[1:3]
            raise ValueError(
                f"frame {self.n} is {img.shape[1]}x{img.shape[0]} but the first is {w0}x{h0}"
            )
        if self.n == len(self._buf):
            if self._bounded:
                return False
            grown = np.empty((2 * len(self._buf), *self._buf.shape[1:]), np.uint8)
            grown[: self.n] = self._buf
            self._buf = grown
        self._buf[self.n] = img
        self.n += 1
        return True

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` frames."""
        self.n = max(0, min(self.n, n))

    def array(self) -> np.ndarray:
        """The frames added so far, (N, H, W, 3).

        A view of the buffer when it is at least half full, else a right-sized copy (the copy
        and the written half of the buffer together still fit the bound), so a short video
        does not keep the whole reservation mapped.
        """
        if self._buf is None:
            return np.zeros((0, 0, 0, 3), np.uint8)
        if 2 * self.n <= len(self._buf):
            self._buf = self._buf[: self.n].copy()
        return self._buf[: self.n]


def iter_video(
    path: str | os.PathLike[str],
    *,
    max_frames: int | None = None,
    max_frame_bytes: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames of a video one by one as (H, W, 3) uint8 RGB (rotation applied).

    Decoding stops after ``max_frames`` frames (the rest of the file is never decoded). A video
    whose frames are larger than ``max_frame_bytes`` (as RGB) is refused with
    :class:`InputError` before the frame is converted.
    """
    import av

    p = existing_file(path, "video")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read video {p.name} ({_reason(exc)}); {_VIDEO_HINT}") from exc
    with container:
        if not container.streams.video:
            raise InputError(f"{p.name} has no video track; {_VIDEO_HINT}")
        stream = container.streams.video[0]
        cc = stream.codec_context
        _check_frame_size(p.name, int(cc.width or 0), int(cc.height or 0), max_frame_bytes)
        stream.thread_type = "AUTO"
        n = 0
        if max_frames is not None and max_frames <= 0:
            return
        try:
            for frame in container.decode(stream):
                _check_frame_size(p.name, frame.width, frame.height, max_frame_bytes)
                img: np.ndarray = frame.to_ndarray(format="rgb24")
                rot = int(getattr(frame, "rotation", 0) or 0) % 360
                if rot:
                    # display matrix rotation is counter-clockwise degrees
                    img = np.ascontiguousarray(np.rot90(img, k=rot // 90))
                n += 1
                yield img
                if max_frames is not None and n >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            if n == 0:
                raise InputError(
                    f"cannot decode video {p.name} ({_reason(exc)}); {_VIDEO_HINT}"
                ) from exc
            log.warning("%s: decoding stopped after %d frames: %s", p.name, n, exc)


def _check_frame_size(name: str, width: int, height: int, max_bytes: int | None) -> None:
    if max_bytes is not None and width * height * 3 > max_bytes:
        raise InputError(
            f"{name} is {width}x{height}: one frame alone passes the "
            f"{max_bytes / 2**20:.0f} MiB limit for decoded frames; give a smaller picture"
        )


def video_fps(path: str | os.PathLike[str]) -> float:
    """The average frame rate of the first video track (25 when the file does not say)."""
    import av

    p = existing_file(path, "video")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise InputError(f"{p.name} has no video track; {_VIDEO_HINT}")
            return _stream_fps(container.streams.video[0])
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot read video {p.name} ({_reason(exc)}); {_VIDEO_HINT}") from exc


def read_video(
    path: str | os.PathLike[str],
    *,
    max_frames: int | None = None,
    max_bytes: int | None = None,
) -> tuple[np.ndarray, float]:
    """The frames of a video as (N, H, W, 3) uint8 RGB, and its fps.

    At most ``max_frames`` frames and ``max_bytes`` of decoded RGB are read (decoding stops
    there, with a warning when frames were left out); memory never passes that bound.
    """
    fps = video_fps(path)
    name = Path(path).name
    stack = FrameStack(max_frames=max_frames, max_bytes=max_bytes)
    # one frame past max_frames tells whether the video was cut
    limit = None if max_frames is None else max_frames + 1
    try:
        for img in iter_video(path, max_frames=limit, max_frame_bytes=max_bytes):
            if not stack.add(img):
                log.warning(
                    "%s: using the first %d frames (%.1f s): %s",
                    name,
                    stack.n,
                    stack.n / fps,
                    why_full(stack, img.nbytes),
                )
                break
    except ValueError as exc:
        raise InputError(f"video {name} changes size: {exc}; {_VIDEO_HINT}") from None
    if stack.n == 0:
        raise InputError(f"video {name} contains no frames; {_VIDEO_HINT}")
    return stack.array(), fps


def why_full(stack: FrameStack, frame_bytes: int) -> str:
    """Why ``stack`` refused a frame of ``frame_bytes``, for a warning."""
    if stack.max_frames is not None and stack.n >= stack.max_frames:
        return f"the limit is {stack.max_frames} frames"
    mib = (stack.max_bytes or 0) / 2**20
    return f"frames of {frame_bytes / 2**20:.1f} MiB fill the {mib:.0f} MiB limit"


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def source_kind(path: str | os.PathLike[str]) -> SourceKind:
    """What kind of avatar source ``path`` is (by suffix; a folder holds images)."""
    p = Path(path)
    if p.is_dir():
        return "images"
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTS:
        return "image"
    if suffix in VIDEO_EXTS:
        return "video"
    existing_file(p, "avatar source")
    raise InputError(
        f"unsupported avatar source format '{suffix or p.name}'; give an image "
        f"({', '.join(sorted(e[1:] for e in IMAGE_EXTS))}), a video "
        f"({', '.join(sorted(e[1:] for e in VIDEO_EXTS))}) or a folder of images"
    )


def read_source(
    path: str | os.PathLike[str],
    *,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> tuple[np.ndarray, float, SourceKind]:
    """An avatar source as frames: an image (1 frame at 25 fps), a video (its frames and fps)
    or a folder of images (sorted by name, at 25 fps).

    A video or folder longer than ``max_seconds`` or larger than ``max_bytes`` of decoded RGB
    is cut there, with a warning; decoding stops at the bound, so memory stays within it. An
    image (alone or in the folder) declaring more than ``max_pixels`` is refused undecoded.
    """
    p = Path(path)
    kind = source_kind(p)
    if kind == "image":
        img = read_image(p, max_pixels=max_pixels)
        _check_frame_size(p.name, img.shape[1], img.shape[0], max_bytes)
        return img[None], DEFAULT_FPS, "image"
    if kind == "video":
        max_frames = None
        if max_seconds is not None:
            max_frames = max(1, math.ceil(max_seconds * video_fps(p) - 1e-6))
        frames, fps = read_video(p, max_frames=max_frames, max_bytes=max_bytes)
        return frames, fps, "video"
    files = sorted(
        (f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file()),
        key=lambda f: _natural_key(f.name),
    )
    if not files:
        raise InputError(f"folder {p} holds no images; {_IMAGE_HINT}")
    max_frames = None if max_seconds is None else max(1, math.ceil(max_seconds * DEFAULT_FPS))
    stack = FrameStack(max_frames=max_frames, max_bytes=max_bytes)
    for f in files:
        im = read_image(f, max_pixels=max_pixels)
        shape = stack.frame_shape
        if shape is not None and im.shape != shape:
            raise InputError(
                f"image {f.name} is {im.shape[1]}x{im.shape[0]} but {files[0].name} is "
                f"{shape[1]}x{shape[0]}; all images in a folder must have the same size"
            )
        if not stack.add(im):
            if stack.n == 0:
                _check_frame_size(f.name, im.shape[1], im.shape[0], max_bytes)
            log.warning(
                "%s: using the first %d of %d images: %s",
                p.name,
                stack.n,
                len(files),
                why_full(stack, im.nbytes),
            )
            break
    return stack.array(), DEFAULT_FPS, "images"


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` finds in a media file."""

    duration: float  # seconds (container duration; 0 when unknown)
    fps: float  # 0 when there is no video
    width: int
    height: int
    n_frames: int  # as declared by the container, else estimated from duration * fps
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    audio_rate: int = 0
    audio_duration: float = 0.0  # seconds of the first audio track (0 when unknown)
    video_duration: float = 0.0  # seconds of the first video track (0 when unknown)


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Streams, codecs, size, fps and durations of a media file (no decoding)."""
    import av

    p = existing_file(path, "media file")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {p.name} ({_reason(exc)}); not a media file") from exc
    with container:
        duration = float(container.duration) / 1e6 if container.duration else 0.0
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None
        fps = _stream_fps(v) if v is not None else 0.0
        v_dur = _stream_seconds(v)
        a_dur = _stream_seconds(a)
        n_frames = 0
        if v is not None:
            n_frames = int(v.frames) or round((v_dur or duration) * fps)
        return MediaInfo(
            duration=duration,
            fps=fps,
            width=int(v.codec_context.width) if v is not None else 0,
            height=int(v.codec_context.height) if v is not None else 0,
            n_frames=n_frames,
            has_video=v is not None,
            has_audio=a is not None,
            video_codec=v.codec_context.name if v is not None else None,
            audio_codec=a.codec_context.name if a is not None else None,
            audio_rate=int(a.codec_context.sample_rate) if a is not None else 0,
            audio_duration=a_dur,
            video_duration=v_dur,
        )


def _stream_seconds(stream: Any) -> float:
    if stream is None or not stream.duration or stream.time_base is None:
        return 0.0
    return float(stream.duration * stream.time_base)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.split(": '")[0].rstrip(".")


# --------------------------------------------------------------------------- writing


class VideoWriter:
    """Write RGB frames (and optional mono audio) as an H.264 + AAC MP4, in-process.

    The size comes from the first frame (odd sizes are padded to even by repeating the last
    row/column). Audio is interleaved with the video as frames arrive and written out fully
    on :meth:`close`; the audio track lasts exactly as long as the samples given.

    Audio can be given whole (``audio=``) or arrive in pieces while frames are written
    (``stream_audio=True`` and :meth:`add_audio`, e.g. TTS output as it is produced).
    The file appears at ``path`` only once :meth:`close` succeeds (written to a temporary
    name first), so a failed render never leaves a half-written result.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        *,
        audio: np.ndarray | None = None,
        audio_rate: int = SAMPLE_RATE,
        crf: int = 20,
        preset: str = "veryfast",
        audio_bitrate: int = 96_000,
        stream_audio: bool = False,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.rate = Fraction(self.fps).limit_denominator(1001)
        self.crf = int(crf)
        self.preset = preset
        self.audio_rate = int(audio_rate)
        self.audio_bitrate = int(audio_bitrate)
        self._audio: np.ndarray | None = None
        if audio is not None and np.asarray(audio).size:
            self._audio = np.asarray(audio, np.float32).reshape(-1)
        elif stream_audio:
            self._audio = np.zeros(0, np.float32)
        self._audio_pos = 0  # next sample of self._audio to encode
        self._audio_offset = 0  # samples already encoded and dropped from self._audio
        self._audio_pts = 0
        self._container: Any = None
        self._vstream: Any = None
        self._astream: Any = None
        self._size: tuple[int, int] | None = None  # (width, height) as given
        self._tmp: Path | None = None
        self.frames_written = 0
        self._closed = False

    # context manager
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self, width: int, height: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.part{os.getpid()}.mp4")
        self._container = av.open(
            str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        vs = self._container.add_stream(
            "libx264", rate=self.rate, options={"crf": str(self.crf), "preset": self.preset}
        )
        vs.width = width + (width % 2)
        vs.height = height + (height % 2)
        vs.pix_fmt = "yuv420p"
        # swscale converts RGB with the BT.601 matrix (limited range); say so in the stream,
        # or browsers assume BT.709 for HD sizes and shift the colours
        cc = vs.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 6, 6, 6, 1
        vs.codec_context.time_base = Fraction(1) / self.rate
        self._vstream = vs
        if self._audio is not None:
            ast = self._container.add_stream("aac", rate=self.audio_rate, layout="mono")
            ast.bit_rate = self.audio_bitrate
            ast.codec_context.time_base = Fraction(1, self.audio_rate)
            self._astream = ast

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        import av

        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        img = np.asarray(frame)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        if self._size is None:
            self._size = (w, h)
            self._open(w, h)
        elif self._size != (w, h):
            raise ValueError(
                f"frame {self.frames_written} is {w}x{h} but the video is "
                f"{self._size[0]}x{self._size[1]}; all frames must have the same size"
            )
        if w % 2 or h % 2:
            img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = Fraction(1) / self.rate
        for packet in self._vstream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1
        # keep the audio about one frame ahead of the video so the muxer interleaves
        self._write_audio_until((self.frames_written + 1) / float(self.rate))

    def add_audio(self, samples: np.ndarray) -> None:
        """Append mono float32 samples (at ``audio_rate``) to the audio track; needs
        ``stream_audio=True`` or ``audio=`` at construction."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        if self._audio is None:
            raise RuntimeError("this VideoWriter has no audio track; pass stream_audio=True")
        chunk = np.asarray(samples, np.float32).reshape(-1)
        if chunk.size:
            self._audio = np.concatenate([self._audio[self._audio_pos :], chunk])
            self._audio_offset += self._audio_pos
            self._audio_pos = 0

    @property
    def audio_samples(self) -> int:
        """Audio samples given so far."""
        return 0 if self._audio is None else self._audio_offset + len(self._audio)

    def _write_audio_until(self, t: float | None) -> None:
        import av

        if self._astream is None or self._audio is None:
            return
        n = len(self._audio)
        # positions in self._audio are relative to the samples already dropped (offset)
        end = n if t is None else min(n, round(t * self.audio_rate) - self._audio_offset)
        block = 1024 * 16
        while self._audio_pos < end:
            stop = min(end, self._audio_pos + block)
            chunk = self._audio[self._audio_pos : stop]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate = self.audio_rate
            af.pts = self._audio_pts
            af.time_base = Fraction(1, self.audio_rate)
            self._audio_pts += len(chunk)
            self._audio_pos = stop
            for packet in self._astream.encode(af):
                self._container.mux(packet)

    def _flush_audio(self) -> None:
        """Encode the rest of the audio. FFmpeg's AAC encoder gives its last packet the true
        number of samples and the MP4 muxer writes the priming delay into an edit list, so the
        track lasts exactly ``len(audio) / audio_rate`` (checked by the integration tests)."""
        if self._astream is None:
            return
        self._write_audio_until(None)
        if self._audio_pts == 0:
            log.warning("%s: the audio track has no samples", self.path.name)
        for packet in self._astream.encode(None):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush encoders, finish the file and move it into place."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            raise InputError(f"no frames were written to {self.path.name}; nothing to save")
        try:
            for packet in self._vstream.encode(None):
                self._container.mux(packet)
            self._flush_audio()
            self._container.close()
            assert self._tmp is not None
            os.replace(self._tmp, self.path)
        finally:
            self._container = None
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()

    def abort(self) -> None:
        """Stop without producing a file (used when an error interrupts a render)."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is discarded anyway
                log.debug("error while aborting %s", self.path, exc_info=True)
            self._container = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    audio: np.ndarray | None = None,
    audio_rate: int = SAMPLE_RATE,
    crf: int = 20,
    preset: str = "veryfast",
) -> int:
    """Write ``frames`` (and ``audio``) to an MP4; returns the number of frames written."""
    with VideoWriter(path, fps, audio=audio, audio_rate=audio_rate, crf=crf, preset=preset) as w:
        for frame in frames:
            w.write(frame)
        n = w.frames_written
    return n
