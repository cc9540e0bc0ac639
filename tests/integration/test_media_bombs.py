"""Decompression bombs: small files that decode to hours of audio or gigabytes of frames.

Each file is built for real with the ffmpeg executable (a few seconds encoded once, then
repeated with ``-stream_loop ... -c copy``, so building them takes well under a second). The
decoding runs in a child process whose peak resident memory (``ru_maxrss``) and time are
measured; the child also runs under an address-space limit, so an implementation that decodes
everything fails with MemoryError instead of taking the machine's memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from digihuman.media.ffmpeg import run_ffmpeg
from digihuman.media.video import probe

MiB = 1 << 20
AS_LIMIT = 2 << 30  # address space of the child: an unbounded decode runs into it


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def measure(body: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``body`` (it sets ``result``) in a child; its outcome, peak RSS growth and time."""
    code = textwrap.dedent(
        """
        import json, resource, time
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        out = {}
        try:
        {body}
            out["result"] = result
        except BaseException as exc:
            out["error"] = type(exc).__name__
            out["message"] = str(exc)
        out["seconds"] = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_growth_mib"] = (peak - base) / 1024
        print(json.dumps(out))
        """
    ).replace("{body}", textwrap.indent(textwrap.dedent(body).strip(), "    "))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_address_space,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    return out


def _looped(tmp: Path, name: str, source_args: list[str], codec_args: list[str], n: int) -> Path:
    """Encode a short piece once, then repeat it ``n`` times without re-encoding."""
    piece = tmp / f"piece-{name}"
    run_ffmpeg(["-y", "-f", "lavfi", *source_args, *codec_args, str(piece)], timeout=60)
    out = tmp / name
    run_ffmpeg(["-y", "-stream_loop", str(n - 1), "-i", str(piece), "-c", "copy", str(out)])
    return out


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bombs")
    return {
        # one hour of Opus silence at 6 kb/s: 1.4 MB -> 230 MB of 16 kHz float32
        "opus_hour": _looped(
            tmp,
            "hour.ogg",
            ["-i", "anullsrc=r=48000:cl=mono", "-t", "10"],
            ["-c:a", "libopus", "-b:a", "6k", "-application", "voip"],
            360,
        ),
        # ten minutes of a still 160x120 picture at 25 fps: 250 KB -> 15,000 frames, 860 MB
        "video_10min": _looped(
            tmp,
            "ten-minutes.mp4",
            ["-i", "color=c=gray:s=160x120:r=25", "-t", "10"],
            ["-c:v", "libx264", "-preset", "ultrafast", "-g", "250"],
            60,
        ),
        # ten seconds of a still 1080p picture: ~15 KB -> 250 frames, 1.5 GB of RGB
        "video_1080p": _looped(
            tmp,
            "hd.mp4",
            ["-i", "color=c=gray:s=1920x1080:r=25", "-t", "2"],
            ["-c:v", "libx264", "-preset", "ultrafast", "-g", "50"],
            5,
        ),
    }


def test_an_hour_of_opus_stops_at_the_duration_limit(bombs: dict[str, Path]) -> None:
    path = bombs["opus_hour"]
    assert path.stat().st_size < 2 * MiB and probe(path).duration > 3500  # the bomb
    out = measure(
        f"""
        from digihuman.media.audio import load_audio
        result = len(load_audio({str(path)!r}, max_seconds=600))
        """
    )
    assert out.get("error") == "TooLarge", out
    assert "600 s limit" in out["message"]
    # decoding the whole hour peaks at ~560 MB and 5 s; stopping at 600 s: ~70 MB, ~1 s
    assert out["peak_growth_mib"] < 160, out
    assert out["seconds"] < 8, out


def test_a_long_video_avatar_stops_decoding_at_120_s(bombs: dict[str, Path]) -> None:
    path = bombs["video_10min"]
    assert path.stat().st_size < 1 * MiB and probe(path).n_frames >= 15000
    out = measure(
        f"""
        from pathlib import Path
        from digihuman.avatar.prepare import load_source
        frames, kind = load_source(Path({str(path)!r}), 25.0)
        result = list(frames.shape)
        """
    )
    assert out.get("result") == [3000, 120, 160, 3], out  # 120 s at 25 fps
    assert "longer than 120 s" in out["stderr"]
    # decoding all 15,000 frames peaked at 1.8 GB and 12 s; 3,000 frames are 173 MB
    assert out["peak_growth_mib"] < 400, out
    assert out["seconds"] < 8, out


def test_large_frames_stop_at_the_byte_budget(bombs: dict[str, Path]) -> None:
    path = bombs["video_1080p"]
    assert path.stat().st_size < 1 * MiB and probe(path).n_frames >= 250
    out = measure(
        f"""
        from pathlib import Path
        from digihuman.avatar import prepare
        prepare.MAX_SOURCE_BYTES = 256 << 20
        frames, kind = prepare.load_source(Path({str(path)!r}), 25.0)
        result = list(frames.shape)
        """
    )
    # 256 MiB hold 43 frames of 1920x1080 RGB (5.9 MiB each); the whole file is 1.5 GB
    assert out.get("result") == [43, 1080, 1920, 3], out
    assert "fill the 256 MiB limit" in out["stderr"]
    assert out["peak_growth_mib"] < 256 + 160, out  # the frames + the decoder's own buffers
    assert out["seconds"] < 8, out


def test_the_asr_worker_handler_refuses_the_opus_bomb_at_the_limit(
    bombs: dict[str, Path], tmp_path: Path
) -> None:
    """The worker path, not only the library call: the ASR job handler passes the limit on."""
    root = tmp_path / "root"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "hour.ogg").write_bytes(bombs["opus_hour"].read_bytes())
    out = measure(
        f"""
        from digihuman.config import load_settings
        from digihuman.jobs.handlers import make_asr
        from digihuman.jobs.worker import JobContext
        from digihuman.storage import DataRoot
        s = load_settings(data_dir={str(root)!r}, asr={{"engine": "fake"}})
        handle = make_asr(s)
        ctx = JobContext("j1", "asr", {{"source": "tests/hour.ogg"}}, 1, DataRoot(s.data_dir))
        result = handle(ctx)
        """
    )
    assert out.get("error") == "TooLarge", out
    assert out["peak_growth_mib"] < 200, out
