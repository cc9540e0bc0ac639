"""The one place an ``ffmpeg`` executable is found and run.

Most media work happens in-process with PyAV (see :mod:`digihuman.media.audio` and
:mod:`digihuman.media.video`); the executable is for the few jobs PyAV does not cover
(pushing a live stream, generating test fixtures in formats PyAV cannot encode, ...).
There is no system ffmpeg on a fresh machine: the one bundled with ``imageio-ffmpeg``
is used when none is on ``PATH``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence

from digihuman.errors import InputError, MissingDependencyError, missing_extra

log = logging.getLogger(__name__)


def ffmpeg_exe() -> str:
    """Path of an ``ffmpeg`` executable: the one on ``PATH``, else the
    binary bundled with imageio-ffmpeg.

    Raises :class:`MissingDependencyError` when neither exists.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # core dependency; only missing in a broken install
        raise missing_extra("imageio-ffmpeg", "core") from exc
    try:
        exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise MissingDependencyError(
            "no ffmpeg executable found on PATH or in imageio-ffmpeg; "
            "install one with 'apt-get install ffmpeg' or 'pip install imageio-ffmpeg'"
        ) from exc
    if not os.access(exe, os.X_OK):
        raise MissingDependencyError(
            f"the ffmpeg bundled with imageio-ffmpeg ({exe}) is not executable; "
            "reinstall it with 'pip install --force-reinstall imageio-ffmpeg'"
        )
    return exe


def _last_error_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no error output"


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout: float | None = None,
    input: bytes | None = None,
) -> bytes:
    """Run ``ffmpeg <args>`` and return its stdout.

    ``-hide_banner -loglevel error`` are added; ``-nostdin`` too unless ``input`` is given
    (then it is written to ffmpeg's stdin, e.g. with ``-i pipe:0``). Raises
    :class:`InputError` with ffmpeg's last error line when it fails or times out.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    if input is None:
        cmd.append("-nostdin")
    cmd.extend(str(a) for a in args)
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError(
            f"ffmpeg did not finish within {timeout:g} s; try a shorter input or a longer timeout"
        ) from exc
    if proc.returncode != 0:
        raise InputError(f"ffmpeg failed: {_last_error_line(proc.stderr)}")
    return proc.stdout
