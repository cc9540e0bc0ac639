"""Answers, piece by piece: delivery metrics, suggestions, the content-evaluation check and
client (against a local HTTP server), the streaming upload parser."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from digihuman.errors import InputError, TooLarge
from digihuman.rooms.answers import UnsupportedMedia, UploadSink, probe_answer, sniff, truncation
from digihuman.rooms.delivery import (
    Word,
    count_fillers,
    delivery_metrics,
    long_pauses,
    units,
    words_from_segments,
)
from digihuman.rooms.evaluate import BadAnswer, ContentEvaluator, check_evaluation
from digihuman.rooms.report import build_report, render_html, suggestions
from digihuman.rooms.store import AnswerView, QuestionView, RoomView

CJK = re.compile(r"[\u4e00-\u9fff]")
ASSETS = Path(__file__).resolve().parents[2] / "src" / "digihuman" / "assets"


def spaced(texts: list[str], step: float = 0.4, start: float = 0.0) -> list[Word]:
    return [Word(start + i * step, start + i * step + step * 0.8, t) for i, t in enumerate(texts)]


# --------------------------------------------------------------------------------------------
# delivery metrics


def test_rate_is_words_per_minute_over_the_speaking_time() -> None:
    words = spaced(["word"] * 30, step=0.4, start=2.0)  # 30 words over 11.92 s
    text = " ".join(w.text for w in words)
    m = delivery_metrics(words, text=text, language="en", duration_s=15, suggested_s=60)
    assert m["unit"] == "words" and m["units"] == 30
    assert m["speaking_s"] == pytest.approx(11.92)
    assert m["rate_per_min"] == pytest.approx(30 / 11.92 * 60, abs=0.1) and m["rate"] == "ok"
    assert m["pauses"]["lead_in_s"] == 2.0 and m["pauses"]["count"] == 0
    assert m["length"]["answer_s"] == pytest.approx(13.92) and m["length"]["verdict"] == "short"


def test_chinese_rate_counts_characters_and_latin_words() -> None:
    assert units("我用Python写了3个服务。", "zh") == 9  # 7 characters, "Python", "3"
    text = "我负责后端开发" * 10  # 70 characters
    words = [Word(i * 0.2, i * 0.2 + 0.15, c) for i, c in enumerate(text)]
    m = delivery_metrics(words, text=text, language="zh", duration_s=14, suggested_s=10)
    assert m["unit"] == "characters" and m["units"] == 70
    assert m["rate_per_min"] == pytest.approx(70 / 13.95 * 60, abs=0.5) and m["rate"] == "fast"
    assert m["length"]["verdict"] == "ok"


def test_fillers() -> None:
    en = "Um, I like Python. It was, like, fine, you know. Uh, uh, basically it worked."
    assert count_fillers(en, "en") == {
        "um": 1,
        "uh": 2,
        "like": 1,  # "I like Python" is not a filler
        "you know": 1,
        "basically": 1,
    }
    zh = "嗯，我觉得就是说，那个，就是这样啊。"
    assert count_fillers(zh, "zh") == {"嗯": 1, "就是说": 1, "就是": 1, "那个": 1, "啊": 1}
    assert count_fillers("A clean answer with no hesitation.", "en") == {}
    words = spaced(en.split())
    m = delivery_metrics(words, text=en, language="en", duration_s=10, suggested_s=30)
    assert m["fillers"]["total"] == 6 and m["fillers"]["per_min"] > 0


def test_long_pauses_between_words() -> None:
    words = [Word(0, 0.5, "a"), Word(0.7, 1.0, "b"), Word(3.5, 4.0, "c"), Word(9.0, 9.5, "d")]
    assert long_pauses(words, 2.0) == [
        {"start": 1.0, "end": 3.5, "seconds": 2.5},
        {"start": 4.0, "end": 9.0, "seconds": 5.0},
    ]
    m = delivery_metrics(words, text="a b c d", language="en", duration_s=10, suggested_s=10)
    assert m["pauses"]["count"] == 2 and m["pauses"]["longest_s"] == 5.0
    assert m["pauses"]["total_s"] == 7.5


def test_nothing_said() -> None:
    m = delivery_metrics([], text="", language="en", duration_s=12, suggested_s=60)
    assert m["units"] == 0 and m["rate"] == "none" and m["length"]["verdict"] == "none"
    one = delivery_metrics([Word(1.0, 1.3, "yes")], text="yes", language="en", duration_s=2,
                           suggested_s=60)  # fmt: skip
    assert one["rate"] == "none" and one["length"]["verdict"] == "short"  # no pace from a word


def test_words_estimated_from_segments() -> None:
    class Seg:
        def __init__(self, start: float, end: float, text: str) -> None:
            self.start, self.end, self.text = start, end, text

    ws = words_from_segments([Seg(1.0, 3.0, "ab cd"), Seg(5.0, 6.0, "x")], "en")
    assert [(w.text, w.start, w.end) for w in ws] == [
        ("ab", 1.0, 2.0),
        ("cd", 2.0, 3.0),
        ("x", 5.0, 6.0),
    ]
    zh = words_from_segments([Seg(0.0, 2.0, "你好AI")], "zh")
    assert [w.text for w in zh] == ["你", "好", "AI"] and zh[-1].end == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------
# suggestions and the report


def _q(i: int, competency: str = "technical", suggested: int = 90) -> QuestionView:
    return QuestionView(
        i, f"Question {i} <b>?</b>", competency, "software", None, suggested, "skipped",
        None, None, None, None, None, None,
    )  # fmt: skip


def _room(lang: str, answers: list[AnswerView], n: int = 3) -> RoomView:
    return RoomView(
        "bob-abcdefghij", "Bob <i>", "dev", ("software",), lang, "data/portrait.jpg", "ready",
        "bank", 1, {}, 360.0, 0.0, 0.0, 0.0, 360.0, None, None,
        tuple(_q(i, "behavioural" if i == 1 else "technical") for i in range(n)),
        tuple(answers),
    )  # fmt: skip


def _answer(i: int, text: str, words: list[Word], lang: str = "en", **ev: Any) -> AnswerView:
    d = delivery_metrics(words, text=text, language=lang, duration_s=60, suggested_s=90)
    data = {"transcript": {"text": text, "language": lang}, "delivery": d, "evaluation": ev or None}
    return AnswerView(i, "done", f"tests/answers/x_{i}.wav", data, "audio")


def test_suggestions_rank_the_worst_problems_first_in_the_room_language() -> None:
    fillers = "um, so um I uh did uh the thing um you know um like, uh"
    a0 = _answer(0, fillers, spaced(fillers.split(), step=0.5))  # short, many fillers
    long_text = " ".join(["word"] * 400)
    a1 = _answer(1, long_text, spaced(long_text.split(), step=0.45))  # 180 s: long
    for lang in ("en", "zh"):
        sug = suggestions(_room(lang, [a0, a1], n=2))
        assert len(sug) == 3
        assert [s["kind"] for s in sug] == ["short", "fillers", "long"], sug
        assert sug[0]["question"] == 0 and sug[2]["question"] == 1
        assert all(bool(CJK.search(s["text"])) == (lang == "zh") for s in sug), sug
    # an LLM suggestion for a weak answer outranks milder rule-based advice
    ev = {"score": 20, "relevance": 2, "structure": {"star": []}, "suggestion": "Say what you did."}
    a2 = _answer(2, long_text, spaced(long_text.split(), step=0.45), **ev)
    sug = suggestions(_room("en", [a0, a2]))
    assert [s["kind"] for s in sug][:2] == ["short", "llm"]
    assert "Question 3: Say what you did." in sug[1]["text"]


def test_few_problems_are_filled_with_general_advice_and_unanswered_questions() -> None:
    text = " ".join(["word"] * 200)
    ok = _answer(0, text, spaced(text.split(), step=0.4))  # 80 s at 150 wpm: nothing to fix
    sug = suggestions(_room("en", [ok]))
    assert sug[0]["kind"] == "unanswered" and "question 2, 3" in sug[0]["text"]
    assert [s["kind"] for s in sug[1:]] == ["star", "numbers"]  # question 1 is behavioural
    assert [s["kind"] for s in suggestions(_room("en", [ok], n=1))] == [
        "numbers",
        "practice",
        "star",
    ]


def test_a_failed_answer_asks_for_a_new_recording() -> None:
    failed = AnswerView(0, "failed", "tests/answers/x.mp4", {}, "video", error="cannot read x")
    for lang in ("en", "zh"):
        sug = suggestions(_room(lang, [failed], n=1))
        assert sug[0]["kind"] == "failed" and "cannot read x" in sug[0]["text"]
    html = render_html(build_report(_room("en", [failed], n=1)))
    assert "Analysis failed: cannot read x" in html


def test_expression_advice() -> None:
    text = " ".join(["word"] * 200)
    ok = _answer(0, text, spaced(text.split(), step=0.4))
    fb = {0: {"status": "done", "face_visible": 0.4, "looking_at_camera": 0.2}}
    sug = suggestions(_room("zh", [ok], n=1), fb)
    assert sug[0]["kind"] == "face" and "40%" in sug[0]["text"]
    fb = {0: {"status": "done", "face_visible": 1.0, "looking_at_camera": 0.3}}
    assert suggestions(_room("en", [ok], n=1), fb)[0]["kind"] == "gaze"


def test_report_html_escapes_user_text() -> None:
    evil = "</p><script>alert(1)</script>"
    a = _answer(0, evil, spaced(["x"] * 5))
    room = _room("en", [a])
    rep = build_report(room, {}, chart_url="/v1/feedback/bob/chart.png?index={index}")
    assert rep["questions"][0]["answer"]["transcript"] == evil
    assert rep["questions"][0]["answer"]["expression_chart"] is None  # audio: no chart
    html = render_html(rep, link_suffix="?key=k&x")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Bob &lt;i&gt;" in html and "Question 1 &lt;b&gt;?&lt;/b&gt;" in html
    assert 'src="/v1/files/tests/answers/x_0.wav?key=k&amp;x"' in html


# --------------------------------------------------------------------------------------------
# content evaluation


GOOD = {
    "relevance": 8,
    "structure": {"star": ["Situation", "action", "result", "action"], "comment": "clear"},
    "score": 72,
    "suggestion": "Quantify the result of your migration.",
}


def test_check_evaluation() -> None:
    got = check_evaluation(GOOD, "en")
    assert got["structure"]["star"] == ["situation", "action", "result"] and got["score"] == 72
    bad: list[tuple[Any, str]] = [
        ([1, 2], "object"),
        ({**GOOD, "score": 150}, "score"),
        ({**GOOD, "relevance": "high"}, "relevance"),
        ({**GOOD, "relevance": True}, "relevance"),
        ({**GOOD, "score": 7.5}, "score"),
        ({**GOOD, "structure": {"star": ["plot"]}}, "star"),
        ({**GOOD, "structure": "STAR"}, "structure"),
        ({**GOOD, "suggestion": ""}, "suggestion"),
        ({k: v for k, v in GOOD.items() if k != "suggestion"}, "suggestion"),
    ]
    for data, what in bad:
        with pytest.raises(BadAnswer, match=what):
            check_evaluation(data, "en")
    with pytest.raises(BadAnswer, match="not in zh"):
        check_evaluation(GOOD, "zh")


class _Server:
    def __init__(self, replies: list[Any], delay_s: float = 0.0) -> None:
        self.replies, self.calls, self.delay_s = list(replies), 0, delay_s
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                time.sleep(outer.delay_s)
                reply = outer.replies[min(outer.calls - 1, len(outer.replies) - 1)]
                content = reply if isinstance(reply, str) else json.dumps(reply)
                data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client timed out and left
                    pass

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Any]:
    made: list[_Server] = []

    def make(replies: list[Any], delay_s: float = 0.0) -> _Server:
        made.append(_Server(replies, delay_s))
        return made[-1]

    yield make
    for s in made:
        s.httpd.shutdown()


def test_evaluator_retries_a_malformed_reply(server: Any) -> None:
    s = server(["not json at all {", "```json\n" + json.dumps(GOOD) + "\n```"])
    ev = ContentEvaluator(base_url=s.url, retries=1, retry_backoff_s=0).evaluate(
        "Tell me about a migration.", "I moved our database.", language="en"
    )
    assert ev.result is not None and ev.result["score"] == 72 and ev.attempts == 2
    assert s.calls == 2


def test_evaluator_gives_up_on_malformed_and_slow_replies(server: Any) -> None:
    s = server([{**GOOD, "score": 150}])
    ev = ContentEvaluator(base_url=s.url, retries=1, retry_backoff_s=0).evaluate(
        "q", "a", language="en"
    )
    assert ev.result is None and "malformed answer" in (ev.error or "") and s.calls == 2
    slow = server([GOOD], delay_s=2.0)
    t0 = time.monotonic()
    ev = ContentEvaluator(base_url=slow.url, timeout_s=0.3, retries=0).evaluate(
        "q", "a", language="en"
    )
    assert ev.result is None and "timed out" in (ev.error or "")
    assert time.monotonic() - t0 < 1.9


# --------------------------------------------------------------------------------------------
# the upload parser


def _multipart(data: bytes, *, name: str = "a.wav", ctype: str = "audio/wav") -> bytes:
    return (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b"--XyZ\r\n"
        + f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
        + f"Content-Type: {ctype}\r\n\r\n".encode()
        + data
        + b"\r\n--XyZ--\r\n"
    )


CT = "multipart/form-data; boundary=XyZ"


def test_upload_streamed_in_tiny_pieces_is_stored_byte_for_byte(tmp_path: Path) -> None:
    wav = (ASSETS / "speech_en.wav").read_bytes()[:20000]
    body = _multipart(wav)
    sink = UploadSink(CT, tmp_path / "ans_0-x", limit=len(wav))
    for i in range(0, len(body), 7):  # boundaries split across pieces
        sink.feed(body[i : i + 7])
    up = sink.finish()
    assert up.ext == "wav" and up.size == len(wav) and up.filename == "a.wav"
    assert up.content_type == "audio/wav"
    assert sink.commit(up).read_bytes() == wav
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ans_0-x.wav"]


def test_upload_refusals_leave_nothing(tmp_path: Path) -> None:
    wav = (ASSETS / "speech_en.wav").read_bytes()
    cases: list[tuple[bytes, type[Exception], str]] = [
        (_multipart(wav), TooLarge, "over the limit"),
        (_multipart(b"%PDF-1.7" + b"x" * 500, name="cv.pdf", ctype=""), UnsupportedMedia, "not"),
        (_multipart(wav[:2000], ctype="text/plain"), UnsupportedMedia, "text/plain"),
        (_multipart(wav[:2000]) [:-8] + _multipart(wav[:2000]), InputError, "one file"),
    ]  # fmt: skip
    for body, exc, msg in cases:
        sink = UploadSink(CT, tmp_path / "a_0-x", limit=100_000)
        with pytest.raises(exc, match=msg):
            for i in range(0, len(body), 4096):
                sink.feed(body[i : i + 4096])
            sink.finish()
        sink.abort()
        assert list(tmp_path.iterdir()) == [], (msg, list(tmp_path.iterdir()))
    with pytest.raises(UnsupportedMedia, match="multipart/form-data"):
        UploadSink("audio/wav", tmp_path / "a", limit=10)
    sink = UploadSink(CT, tmp_path / "a_0-x", limit=100_000)
    sink.feed(_multipart(wav[:3000])[:1500])  # cut off: finish never comes
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    sink = UploadSink(CT, tmp_path / "a_0-x", limit=100_000)
    sink.feed(b'--XyZ\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--XyZ--\r\n')
    with pytest.raises(InputError, match="no file"):
        sink.finish()


def test_sniff_and_truncation(tmp_path: Path) -> None:
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "wav"
    assert sniff(b"\x00\x00\x00\x20ftypisom") == "mp4"
    assert sniff(b"\x00\x00\x00\x14ftypqt  ") == "mov"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm") == "webm"
    assert sniff(b"OggS\x00\x02") == "ogg" and sniff(b"ID3\x04") == "mp3"
    assert sniff(b"\xff\xf1\x50\x80") == "aac" and sniff(b"fLaC") == "flac"
    assert sniff(b"<html>") is None and sniff(b"") is None
    wav = (ASSETS / "speech_en.wav").read_bytes()
    p = tmp_path / "a.wav"
    p.write_bytes(wav[: len(wav) // 2])
    assert "declares" in (truncation(p, "wav") or "")
    with pytest.raises(UnsupportedMedia, match="truncated"):
        probe_answer(p)
    p.write_bytes(wav)
    assert truncation(p, "wav") is None
    assert probe_answer(p) == {"media_type": "audio", "duration_s": pytest.approx(10.61, 0.01)}
    box = (24).to_bytes(4, "big") + b"ftypisom" + b"\x00" * 12
    mdat = (1000).to_bytes(4, "big") + b"mdat" + b"\x00" * 100
    p = tmp_path / "v.mp4"
    p.write_bytes(box + mdat)
    assert "'mdat' box ends at byte 1024" in (truncation(p, "mp4") or "")


# --------------------------------------------------------------------------------------------
# the body guard: answer uploads have their own cap


def test_the_body_guard_exempts_uploads_from_the_json_cap_but_bounds_them() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from digihuman.api.rooms import ANSWER_UPLOAD_PATH
    from digihuman.api.security import GuardMiddleware

    async def echo(request: Request) -> JSONResponse:
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return JSONResponse({"bytes": n})

    app = Starlette(
        routes=[
            Route("/v1/rooms/{z}/answers/{i}", echo, methods=["POST"]),
            Route("/v1/tts", echo, methods=["POST"]),
        ]
    )
    guarded = GuardMiddleware(app, upload_limits=[(ANSWER_UPLOAD_PATH, 3 * 1024 * 1024)])
    c = TestClient(guarded)
    two_mib = b"x" * (2 * 1024 * 1024)
    assert c.post("/v1/rooms/bob-x/answers/0", content=two_mib).json() == {"bytes": len(two_mib)}
    assert c.post("/v1/tts", content=two_mib).status_code == 413  # the 1 MiB cap elsewhere
    r = c.post("/v1/rooms/bob-x/answers/0", content=two_mib * 2)  # over the upload cap
    assert r.status_code == 413 and "limit is 3145728" in r.json()["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(4):
            yield two_mib

    assert c.post("/v1/rooms/bob-x/answers/0", content=chunked()).status_code == 413
    assert c.post("/v1/rooms/BAD/answers/0", content=two_mib).status_code == 413  # not the route
