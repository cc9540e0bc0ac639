"""Audio decode, resample, slice and save.

Everything inside digihuman works on 16 kHz mono float32 in [-1, 1]
(:data:`digihuman.types.SAMPLE_RATE`). :func:`load_audio` decodes any container and codec
that FFmpeg (through PyAV) reads — wav, mp3, m4a/aac, ogg/vorbis/opus, flac, or the audio
track of a video — and converts it with FFmpeg's own resampler.
"""

from __future__ import annotations

import logging
import os
import wave

import numpy as np

from digihuman.errors import InputError, TooLarge
from digihuman.media._files import existing_file
from digihuman.storage import atomic_output
from digihuman.types import SAMPLE_RATE

log = logging.getLogger(__name__)

AUDIO_EXTS = frozenset({".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".webm"})
"""Suffixes of plain audio files (videos with a sound track are accepted too)."""

_PADDING_SLACK_S = 0.1
_HINT = "give a wav, mp3, m4a, ogg or flac file, or a video with sound"


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int = SAMPLE_RATE,
    *,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode the first audio track of ``path`` to mono float32 at ``sample_rate``.

    With ``max_seconds``, decoding stops as soon as the decoded audio passes that length and
    :class:`~digihuman.errors.TooLarge` is raised: a small, highly compressed file (an hour of
    Opus silence is 1.4 MB) never expands beyond the limit in memory or time. The frames are
    counted on the decoder's side, before resampling, so one long frame at a tiny declared
    sample rate cannot expand in the resampler either.

    Raises :class:`~digihuman.errors.NotFoundError` when the file is missing and
    :class:`~digihuman.errors.InputError` when it cannot be decoded, has no audio track or
    contains no samples.
    """
    import av

    p = existing_file(path, "audio file")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read audio file {p.name} ({_reason(exc)}); {_HINT}") from exc
    chunks: list[np.ndarray] = []
    decoded_s = 0.0  # seconds decoded so far, at the decoder's own rate
    # a little slack for the encoder padding trimmed at the end (at most a frame)
    stop_s = None if max_seconds is None else max_seconds + _PADDING_SLACK_S
    bad_packets = 0
    tail_excess = 0.0  # seconds of encoder padding the last packet declares but decodes anyway
    with container:
        if not container.streams.audio:
            raise InputError(f"{p.name} has no audio track; {_HINT}")
        stream = container.streams.audio[0]
        # keep the channels through the resampler and average them here: swresample's own
        # downmix weights depend on how the file declares its channel layout
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    bad_packets += 1  # a damaged packet: skip it, keep the rest
                    continue
                decoded = 0
                for frame in frames:
                    if stop_s is not None:
                        decoded_s += frame.samples / max(int(frame.sample_rate or 0), 1)
                        if decoded_s > stop_s:
                            raise _too_long(p.name, max_seconds)
                    decoded += frame.samples
                    for out in resampler.resample(frame):
                        chunks.append(_mono(out.to_ndarray()))
                if decoded and frame.sample_rate:
                    tail_excess = _declared_excess(packet, decoded, frame.sample_rate)
            for out in resampler.resample(None):
                chunks.append(_mono(out.to_ndarray()))
        except av.error.FFmpegError as exc:
            raise InputError(
                f"cannot decode audio file {p.name} ({_reason(exc)}); {_HINT}"
            ) from exc
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    # MP4/AAC stores the real length of the last frame in its packet duration while the
    # decoder returns a whole 1024-sample frame: drop that padding, as ffmpeg's CLI does.
    trim = round(tail_excess * sample_rate)
    if 0 < trim < samples.size:
        samples = samples[:-trim]
    if bad_packets:
        log.warning("%s: skipped %d undecodable audio packets", p.name, bad_packets)
    if samples.size == 0:
        raise InputError(f"audio file {p.name} contains no samples; give a recording with speech")
    if max_seconds is not None and samples.size > max_seconds * sample_rate:
        raise _too_long(p.name, max_seconds)
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples.astype(np.float32, copy=False)


def _too_long(name: str, max_seconds: float | None) -> TooLarge:
    return TooLarge(
        f"audio file {name} is longer than the {max_seconds:g} s limit; give a shorter recording"
    )


def _mono(planar: np.ndarray) -> np.ndarray:
    """(channels, n) planar float -> (n,) mean of the channels."""
    if planar.ndim == 1:
        return planar.astype(np.float32, copy=False)
    if planar.shape[0] == 1:
        return planar[0].astype(np.float32, copy=False)
    return planar.mean(axis=0, dtype=np.float32)


def _declared_excess(packet: object, decoded: int, rate: int) -> float:
    """Seconds by which ``decoded`` samples exceed the packet's declared duration (>= 0)."""
    duration = getattr(packet, "duration", None)
    time_base = getattr(packet, "time_base", None)
    if not duration or time_base is None:
        return 0.0
    declared = float(duration * time_base)
    return max(0.0, decoded / rate - declared)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # PyAV appends ": '<path>'" to its messages; the caller already names the file.
    return text.split(": '")[0].rstrip(".")


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono audio with a polyphase filter; the result has
    ``ceil(len(x) * dst_rate / src_rate)`` samples."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(src_rate), int(dst_rate))
    y = resample_poly(x, int(dst_rate) // g, int(src_rate) // g)
    return np.asarray(y, dtype=np.float32)


def save_wav(path: str | os.PathLike[str], x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono audio as 16-bit PCM wav (values clipped to [-1, 1]); atomic."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with atomic_output(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def slice_audio(
    x: np.ndarray, sample_rate: int, start_s: float, end_s: float | None = None
) -> np.ndarray:
    """Samples from ``start_s`` to ``end_s`` (seconds, end exclusive; ``None`` = to the end),
    clamped to the signal. Sample indices are ``round(t * sample_rate)``."""
    n = len(x)
    a = min(max(round(start_s * sample_rate), 0), n)
    b = n if end_s is None else min(max(round(end_s * sample_rate), a), n)
    return x[a:b]


def duration_s(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Length of ``x`` in seconds."""
    return len(x) / float(sample_rate)


__all__ = [
    "AUDIO_EXTS",
    "duration_s",
    "load_audio",
    "resample",
    "save_wav",
    "slice_audio",
]
