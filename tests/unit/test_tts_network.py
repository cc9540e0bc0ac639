"""The network TTS engines against local fake servers on 127.0.0.1 speaking the same protocols:
OpenAI ``/v1/audio/speech``, a CosyVoice-style server (voice cloning), and edge-tts's websocket.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import json
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import SecretStr

from digihuman.config import TTSSettings
from digihuman.engines.tts import create_tts, speech_stream
from digihuman.engines.tts.http import SpeechServiceError
from digihuman.engines.tts.stream import collect
from digihuman.errors import InputError
from digihuman.media.audio import save_wav


def tone(n: int, rate: int, freq: float = 300.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def streaming_wav_header(rate: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<I", 16) + fmt + b"data\xff\xff\xff\xff"


class Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return None

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def send_chunked(self, parts: list[bytes], content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for p in parts:
            self.wfile.write(f"{len(p):x}\r\n".encode() + p + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@contextmanager
def serve(handler: type[Recorder]) -> Iterator[str]:
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------
# OpenAI-compatible /v1/audio/speech
# ------------------------------------------------------------------------------------------


class OpenAISpeech(Recorder):
    rate = 22050

    def do_POST(self) -> None:
        req = json.loads(self.body())
        self.requests.append(
            {"path": self.path, "json": req, "auth": self.headers.get("Authorization")}
        )
        if self.path != "/v1/audio/speech" or not {"model", "input", "voice"} <= set(req):
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "bad request"}}')
            return
        audio = tone(40 * len(req["input"]) + 1, self.rate)
        if req.get("response_format") == "pcm":
            data = pcm16(tone(40 * len(req["input"]) + 1, 24000))
        else:
            data = streaming_wav_header(self.rate) + pcm16(audio)
        # odd-sized pieces: the client must reassemble samples split across network chunks
        self.send_chunked([data[i : i + 333] for i in range(0, len(data), 333)], "audio/wav")


def test_openai_speech_streams_one_request_per_sentence() -> None:
    with serve(OpenAISpeech) as url:
        settings = TTSSettings(
            engine="openai",
            openai_base_url=url,
            openai_api_key=SecretStr("sk-test"),
            openai_voice="nova",
        )
        tts = create_tts(settings)
        chunks = list(tts.synthesize("Hello there. How are you?"))
    reqs = OpenAISpeech.requests
    assert [r["json"]["input"] for r in reqs] == ["Hello there.", "How are you?"]
    assert all(r["auth"] == "Bearer sk-test" for r in reqs)
    assert reqs[0]["json"] == {
        "model": "tts-1",
        "input": "Hello there.",
        "voice": "nova",
        "response_format": "wav",
    }
    assert len(chunks) > 2  # streamed in pieces, not one blob per sentence
    x, rate = collect(chunks)
    assert rate == 24000  # the server's 22050 Hz WAV was resampled to the declared rate
    expected = sum(40 * len(s) + 1 for s in ("Hello there.", "How are you?")) * 24000 / 22050
    assert abs(len(x) - expected) <= 2
    assert 0.45 < np.max(np.abs(x)) < 0.55


def test_openai_speech_pcm_format_and_16k_stream() -> None:
    with serve(OpenAISpeech) as url:
        settings = TTSSettings(
            engine="openai", openai_base_url=url + "/v1", openai_response_format="pcm"
        )
        x, rate = collect(speech_stream(create_tts(settings), "Hi."))
    assert rate == 16000 and abs(len(x) - (40 * 3 + 1) * 16000 / 24000) <= 1


def test_openai_speech_errors_are_one_line() -> None:
    with serve(OpenAISpeech) as url:
        tts = create_tts(TTSSettings(engine="openai", openai_base_url=url + "/wrong"))
        with pytest.raises(SpeechServiceError, match="answered 400"):
            list(tts.synthesize("Hello."))
    tts = create_tts(TTSSettings(engine="openai", openai_base_url="http://127.0.0.1:9"))
    with pytest.raises(SpeechServiceError, match="check that the server is up"):
        list(tts.synthesize("Hello."))


# ------------------------------------------------------------------------------------------
# CosyVoice / F5-TTS style server with a reference voice
# ------------------------------------------------------------------------------------------


def parse_form(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None]]:
    """A form as FastAPI's ``Form()`` reads it: urlencoded or multipart."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        from urllib.parse import parse_qsl

        return {k: (v.encode(), None) for k, v in parse_qsl(body.decode())}
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_payload(decode=True), part.get_filename())
    return fields


class CosyVoiceServer(Recorder):
    def do_POST(self) -> None:
        fields = parse_form(self.headers["Content-Type"], self.body())
        self.requests.append({"path": self.path, "fields": fields})
        if self.path == "/inference_zero_shot":
            need = {"tts_text", "prompt_text", "prompt_wav"}
        elif self.path == "/inference_sft":
            need = {"tts_text", "spk_id"}
        else:
            need = {"?"}
        if not need <= set(fields):
            self.send_response(422)
            self.end_headers()
            return
        n = 30 * len(fields["tts_text"][0].decode())
        data = pcm16(tone(n, 22050))
        self.send_chunked([data[i : i + 101] for i in range(0, len(data), 101)], "audio/pcm")


def test_cosyvoice_zero_shot_sends_reference_voice(tmp_path: Path) -> None:
    ref = tmp_path / "ref.wav"
    save_wav(ref, tone(8000, 16000, 220.0), 16000)
    with serve(CosyVoiceServer) as url:
        settings = TTSSettings(
            engine="cosyvoice",
            cosyvoice_url=url,
            reference_audio=str(ref),
            reference_text="希望你以后能够做得比我还好哟。",
        )
        tts = create_tts(settings)
        assert tts.capabilities.voice_cloning
        x, rate = collect(tts.synthesize("你好。今天天气很好。"))
    reqs = CosyVoiceServer.requests
    assert [r["path"] for r in reqs] == ["/inference_zero_shot"] * 2
    fields = reqs[0]["fields"]
    assert fields["tts_text"][0].decode() == "你好。"
    assert fields["prompt_text"][0].decode() == "希望你以后能够做得比我还好哟。"
    wav, filename = fields["prompt_wav"]
    assert filename == "prompt.wav" and wav[:4] == b"RIFF" and len(wav) == 44 + 2 * 8000
    assert rate == 22050 and len(x) == 30 * (3 + 7)


def test_cosyvoice_without_reference_uses_a_speaker(tmp_path: Path) -> None:
    with serve(CosyVoiceServer) as url:
        tts = create_tts(TTSSettings(engine="cosyvoice", cosyvoice_url=url))
        x, _ = collect(tts.synthesize("Hello.", voice="英文女"))
    (req,) = CosyVoiceServer.requests
    assert req["path"] == "/inference_sft" and req["fields"]["spk_id"][0].decode() == "英文女"
    assert len(x) == 30 * 6
    with pytest.raises(InputError, match="reference text"):
        create_tts(
            TTSSettings(engine="cosyvoice", cosyvoice_url=url, reference_audio=str(tmp_path))
        )


# ------------------------------------------------------------------------------------------
# edge-tts: a local websocket server speaking its protocol
# ------------------------------------------------------------------------------------------


def mp3_bytes(x: np.ndarray, rate: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (x * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@contextmanager
def fake_edge_server(audio: bytes, seen: list[str]) -> Iterator[str]:
    from aiohttp import WSMsgType, web

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            seen.append(msg.data)
            if "Path:ssml" not in msg.data:
                continue  # speech.config
            head = "X-RequestId:abc\r\nContent-Type:application/json; charset=utf-8\r\n"
            await ws.send_str(head + "Path:turn.start\r\n\r\n{}")
            for i in range(0, len(audio), 500):
                header = b"X-RequestId:abc\r\nContent-Type:audio/mpeg\r\nPath:audio\r\n"
                await ws.send_bytes(len(header).to_bytes(2, "big") + header + audio[i : i + 500])
            await ws.send_str(head + "Path:turn.end\r\n\r\n{}")
        return ws

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/edge/v1", ws_handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        yield f"ws://127.0.0.1:{port}/edge/v1?TrustedClientToken=test"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


def test_edge_tts_over_a_local_websocket(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_tts.communicate

    source = tone(24000 // 2, 24000)
    seen: list[str] = []
    with fake_edge_server(mp3_bytes(source, 24000), seen) as url:
        monkeypatch.setattr(edge_tts.communicate, "WSS_URL", url)
        tts = create_tts(TTSSettings(engine="edge"))
        chunks = list(tts.synthesize("你好。Hello there."))
    ssml = [m for m in seen if "Path:ssml" in m]
    assert len(ssml) == 2  # one request per sentence
    assert "(zh-CN, XiaoxiaoNeural)" in ssml[0] and "你好" in ssml[0]
    assert "(en-US, AriaNeural)" in ssml[1] and "Hello there." in ssml[1]
    assert len(chunks) > 2 and all(c.sample_rate == 24000 for c in chunks)
    x, _ = collect(chunks)
    # each sentence decodes back to the half-second tone (mp3 adds encoder padding)
    assert 2 * 12000 <= len(x) <= 2 * 12000 + 2 * 2400
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 24000 / len(x) - 300.0) < 5.0


def test_edge_tts_errors_become_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_tts.communicate

    monkeypatch.setattr(edge_tts.communicate, "WSS_URL", "ws://127.0.0.1:9/edge/v1?x=1")
    tts = create_tts(TTSSettings(engine="edge", edge_voice="en-GB-SoniaNeural"))
    with pytest.raises(SpeechServiceError, match="edge-tts failed for voice en-GB-SoniaNeural"):
        list(tts.synthesize("Hello."))
