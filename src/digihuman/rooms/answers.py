"""Receiving an answer's upload: a multipart/form-data body streamed to disk as it arrives.

:class:`UploadSink` is fed the request body in pieces (python-multipart's streaming parser finds
the parts); the first part with a file name is the answer. Its first bytes must be an audio or
video container we know (WAV, MP3, AAC, FLAC, Ogg, MP4/MOV/M4A, WebM/Matroska), its declared
type audio/*, video/* or application/octet-stream, and its size at most ``limit`` bytes:
otherwise :class:`UnsupportedMedia` (415) or :class:`~digihuman.errors.TooLarge` (413) at once.
The bytes go to a temporary file beside the destination (``.<name>.part<random>``), never into
memory beyond one piece; :meth:`UploadSink.commit` renames it into place, :meth:`UploadSink.abort`
(a refusal, a client that went away mid-way) deletes it: nothing is kept.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from digihuman.errors import DigihumanError, InputError, TooLarge


class UnsupportedMedia(DigihumanError):
    """The upload is not an audio or video file this service reads."""

    http_status = 415


ALLOWED_TYPES = ("audio/", "video/", "application/octet-stream")
SNIFF_BYTES = 64


def sniff(head: bytes) -> str | None:
    """The container of a file from its first bytes: the file extension we store it under."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        if len(head) > 1 and head[1] & 0xF6 == 0xF0:  # ADTS AAC: layer bits 00
            return "aac"
        return "mp3"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "mov"
        if brand in (b"M4A ", b"M4B "):
            return "m4a"
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    return None


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a request's Content-Type, or UnsupportedMedia saying what to
    send."""
    from python_multipart.multipart import parse_options_header

    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UnsupportedMedia(
            "send the answer as multipart/form-data with the audio or video file in a "
            "file field (e.g. curl -F file=@answer.webm ...)"
        )
    return boundary


@dataclass(frozen=True)
class Upload:
    path: Path  # the final file
    ext: str
    filename: str
    content_type: str | None
    size: int


class UploadSink:
    """Feed it the body (:meth:`feed`), then :meth:`finish` and :meth:`commit`, or
    :meth:`abort`. ``dest`` is the final path without its extension (the container found in
    the first bytes gives it)."""

    def __init__(self, content_type: str | None, dest: Path, *, limit: int) -> None:
        from python_multipart.multipart import MultipartParser

        self.dest = dest
        self.limit = int(limit)
        self.size = 0
        self.filename = ""
        self.part_type: str | None = None
        self.ext: str | None = None
        self.tmp: Path | None = None
        self._fh: IO[bytes] | None = None
        self._head = b""
        self._in_file = False
        self._files = 0
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._ended = False
        self._error: BaseException | None = None
        self._parser = MultipartParser(
            boundary_of(content_type),
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
            max_size=self.limit + 1024 * 1024,  # the file plus room for small fields
        )

    # -- parser callbacks (run inside feed) ---------------------------------------------------

    def _part_begin(self) -> None:
        self._headers = {}
        self._field = self._value = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, disp = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = disp.get(b"filename")
        self._in_file = filename is not None
        if not self._in_file:
            return
        self._files += 1
        if self._files > 1:
            raise InputError("send one file per answer (this request holds several)")
        self.filename = (filename or b"").decode("utf-8", "replace")[:200]
        ptype = self._headers.get(b"content-type", b"").decode("latin-1").strip().lower()
        self.part_type = ptype or None
        if ptype and not ptype.startswith(ALLOWED_TYPES):
            raise UnsupportedMedia(
                f"the file is {ptype}; send an audio or video recording (audio/* or video/*)"
            )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            if end - start > 64 * 1024:
                raise InputError("a form field other than the file is over 64 KiB")
            return
        piece = data[start:end]
        self.size += len(piece)
        if self.size > self.limit:
            raise TooLarge(
                f"the upload is over the limit of {self.limit} bytes ({_mb(self.limit)}); "
                "send a shorter or more compressed recording"
            )
        if self._fh is None:
            self._head += piece
            if len(self._head) < SNIFF_BYTES:
                return
            self._open()
        else:
            assert self._fh is not None
            self._fh.write(piece)

    def _open(self) -> None:
        ext = sniff(self._head)
        if ext is None:
            raise UnsupportedMedia(
                f"{self.filename or 'the file'} is not an audio or video file this service "
                "reads (WAV, MP3, AAC, FLAC, Ogg, MP4/MOV/M4A, WebM/Matroska)"
            )
        self.ext = ext
        final = self.dest.with_name(f"{self.dest.name}.{ext}")
        self.tmp = final.with_name(f".{final.name}.part{secrets.token_hex(4)}")
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.tmp, "xb", buffering=1024 * 1024)  # noqa: SIM115  # closed in finish/abort
        self._fh.write(self._head)
        self._head = b""

    def _part_end(self) -> None:
        if self._in_file and self._fh is None and self._head:  # a file under SNIFF_BYTES
            self._open()
        self._in_file = False

    def _end(self) -> None:
        self._ended = True

    # -- the caller's side --------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse and store the next piece of the body; a refusal raises (then call abort)."""
        if self._error is not None:
            raise self._error
        try:
            self._parser.write(data)
        except DigihumanError as e:
            self._error = e
            raise
        except Exception as e:  # python-multipart's parse errors
            self._error = InputError(f"the multipart body is malformed ({e})")
            raise self._error from e

    def finish(self) -> Upload:
        """The whole body has arrived: the upload (still under its temporary name)."""
        self._parser.finalize()
        if not self._ended:
            raise InputError("the multipart body ended before its closing boundary")
        if self._files == 0 or self.tmp is None or self._fh is None:
            raise InputError(
                "no file in the upload: send the recording as a file field "
                "(e.g. curl -F file=@answer.webm ...)"
            )
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        assert self.ext is not None
        final = self.dest.with_name(f"{self.dest.name}.{self.ext}")
        return Upload(final, self.ext, self.filename, self.part_type, self.size)

    def commit(self, upload: Upload) -> Path:
        assert self.tmp is not None
        self.tmp.replace(upload.path)
        self.tmp = None
        return upload.path

    def abort(self) -> None:
        """Delete what was written (idempotent)."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    @property
    def temp_path(self) -> Path | None:
        return self.tmp


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n} bytes"


def truncation(path: Path, ext: str) -> str | None:
    """Why the file is cut short, or None: an MP4/MOV/M4A whose last top-level box runs past
    the end of the file, a WAV whose RIFF header declares more bytes than there are (0 and
    0xFFFFFFFF, which streaming recorders write, are accepted)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if ext in ("mp4", "mov", "m4a"):
            pos = 0
            while pos + 8 <= size:
                fh.seek(pos)
                head = fh.read(16)
                n = int.from_bytes(head[:4], "big")
                if n == 1 and len(head) >= 16:
                    n = int.from_bytes(head[8:16], "big")
                elif n == 0:  # the last box runs to the end of the file
                    return None
                if n < 8:
                    return f"a malformed box at byte {pos}"
                if pos + n > size:
                    box = head[4:8].decode("latin-1")
                    return f"its {box!r} box ends at byte {pos + n}, the file has {size}"
                pos += n
            return None
        if ext == "wav":
            head = fh.read(12)
            declared = int.from_bytes(head[4:8], "little")
            if declared not in (0, 0xFFFFFFFF) and declared + 8 > size:
                return f"its header declares {declared + 8} bytes, the file has {size}"
    return None


def probe_answer(path: Path) -> dict[str, Any]:
    """What the stored file holds: ``media_type`` (video when it has a video track), duration.
    UnsupportedMedia when it is cut short, has no audio track or cannot be read as media."""
    from digihuman.media.video import probe

    cut = truncation(path, path.suffix.lstrip("."))
    if cut is not None:
        raise UnsupportedMedia(f"the recording is truncated ({cut}); upload the whole file")
    try:
        info = probe(path)
    except InputError as e:
        raise UnsupportedMedia(f"the upload is not a readable audio or video file: {e}") from e
    if not info.has_audio:
        raise UnsupportedMedia(
            "the recording has no audio track: the answer is analysed from its speech"
        )
    duration = info.audio_duration or info.duration or None
    return {"media_type": "video" if info.has_video else "audio", "duration_s": duration}
