"""The room report against real processes: an API process, ``tts`` and ``render`` workers
making the question clips (fake voice and lip-sync: the clips are not what is tested), an
``answer`` worker, a ``bqfk`` worker running the expression engine on a video rendered by the
project, a real Redis, a local OpenAI-compatible server for the content evaluation (one
answer gets malformed replies, another a valid one), on SQLite and PostgreSQL.

A second test kills the answer worker while it waits on the evaluation; another worker takes
the job over and the answer is stored once.

The answer workers use the project's fake ASR (it "hears" "hello world" over the speech), so
the delivery figures, and the rule-based suggestions drawn from them, are known in advance;
real transcription is tested in test_answers.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from dbfixtures import database_url

ASSETS = Path(__file__).resolve().parents[2] / "src" / "digihuman" / "assets"
CJK = re.compile(r"[\u4e00-\u9fff]")
BAD_SCORE = {"relevance": 5, "structure": {"star": []}, "score": 150, "suggestion": "多举例子"}
EVAL_OK = '{"relevance": 6, "structure": {"star": ["action"]}, "score": 55}'
LLM_SUGGESTION = "用一个具体项目说明你的个人贡献，并给出可量化的结果。"


class FakeLLM:
    """``POST /v1/chat/completions``: the reply for a prompt is chosen by the question text in
    it (``replies``: question → list of contents, one per call; the last one repeats)."""

    def __init__(self) -> None:
        self.replies: dict[str, list[str]] = {}
        self.calls: list[str] = []
        self.delays: list[float] = []  # seconds before answering the 1st, 2nd, ... call
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                outer.calls.append(prompt)
                n_call = len(outer.calls)
                if n_call <= len(outer.delays):
                    time.sleep(outer.delays[n_call - 1])
                content = "{}"
                for q, contents in outer.replies.items():
                    if q in prompt:
                        n = sum(q in c for c in outer.calls) - 1
                        content = contents[min(n, len(contents) - 1)]
                data = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the caller is gone (a killed worker)
                    pass

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.getbasetemp() / "rooms-answer-video.mp4"  # one render a session
    if out.exists():
        return out.read_bytes()
    tmp = tmp_path_factory.mktemp("render")
    subprocess.run(
        [
            *(sys.executable, "-m", "digihuman", "render"),
            *("--avatar", str(ASSETS / "portrait.jpg"), "--audio", str(ASSETS / "speech_en.wav")),
            *("-o", str(out), "-q"),
        ],
        check=True,
        env={**os.environ, "DIGIHUMAN_DATA_DIR": str(tmp / "root")},
        timeout=120,
    )
    return out.read_bytes()


def _wait(pred: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what} never happened")


def test_report_json_and_html(
    db_url: str, redis_url: str, tmp_path: Path, procs: Any, helpers: Any, video: bytes
) -> None:
    llm = FakeLLM()
    try:
        root = tmp_path / "root"
        env = helpers.service_env(
            redis_url,
            root,
            DIGIHUMAN_DATABASE_URL=db_url,
            DIGIHUMAN_LIPSYNC__ENGINE="fake",
            DIGIHUMAN_QUESTIONS__OPENAI_BASE_URL=llm.url,
            DIGIHUMAN_QUESTIONS__RETRIES="1",
            DIGIHUMAN_QUESTIONS__TIMEOUT_S="10",
            DIGIHUMAN_ROOMS__EVALUATION="openai",
            DIGIHUMAN_ROOMS__TICK_S="0.2",
        )
        for kind in ("answer", "bqfk", "tts", "render"):
            procs.worker(kind, env)
        api = procs.api(env)
        for kind in ("answer", "bqfk", "tts", "render"):
            helpers.wait_ready(redis_url, kind, timeout=60)

        r = httpx.get(
            f"{api}/create/zbjv2",
            params={"username": "<script>alert(1)</script>", "job": "软件工程师", "count": 3},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        z, questions = r.json()["zbjname"], r.json()["question"]
        llm.replies[questions[0]] = [
            "this is not JSON {",
            json.dumps(BAD_SCORE),
        ]
        llm.replies[questions[1]] = [
            json.dumps(
                {
                    "relevance": 4,
                    "structure": {"star": ["situation", "action"], "comment": "缺少结果"},
                    "score": 30,
                    "suggestion": LLM_SUGGESTION,
                },
                ensure_ascii=False,
            )
        ]
        speech = (ASSETS / "speech_en.wav").read_bytes()
        for i, (name, data, ctype) in enumerate(
            [("a.wav", speech, "audio/wav"), ("b.mp4", video, "video/mp4")]
        ):
            r = httpx.post(
                f"{api}/v1/rooms/{z}/answers/{i}",
                files={"file": (name, io.BytesIO(data), ctype)},
                timeout=60,
            )
            assert r.status_code == 202, r.text

        def analysed() -> dict[str, Any] | None:
            rep = httpx.get(f"{api}/v1/rooms/{z}/report", timeout=30).json()
            qs = rep["questions"]
            ready = (
                all(qs[i]["answer"]["status"] == "done" for i in (0, 1))
                and (qs[1]["answer"]["expression"] or {}).get("status") == "done"
                and all(q["clip"]["status"] == "ready" for q in qs)
            )
            return rep if ready else None

        rep = _wait(analysed, "analysis of both answers, the expressions and the clips")
        assert rep["language"] == "zh" and rep["summary"] == {
            "questions": 3,
            "answered": 2,
            "analysed": 2,
            "pending": 0,
            "failed": 0,
            "mean_rate_per_min": rep["summary"]["mean_rate_per_min"],
            "fillers": 0,
            "long_pauses": rep["summary"]["long_pauses"],
        }
        q0, q1, q2 = rep["questions"]
        assert [q["text"] for q in rep["questions"]] == questions
        for i, q in enumerate(rep["questions"]):  # each question with its clip
            assert q["clip"]["video"] == f"/v1/files/tests/{z}_{i}.mp4"
        a0, a1 = q0["answer"], q1["answer"]
        assert a0["transcript"] == "hello world" and a0["delivery"]["length"]["verdict"] == "short"
        assert a0["media_type"] == "audio" and a0["expression_chart"] is None
        # the malformed replies (not JSON, then a score of 150) were retried, then given up
        assert a0["evaluation"] is None and "malformed" in a0["evaluation_error"]
        assert sum(questions[0] in c for c in llm.calls) == 2
        assert a1["evaluation"]["score"] == 30 and a1["evaluation"]["suggestion"] == LLM_SUGGESTION
        assert a1["evaluation"]["structure"]["star"] == ["situation", "action"]
        assert a1["expression"]["face_visible"] == 1.0
        assert a1["expression_chart"] == f"/v1/feedback/{z}/chart.png?index=1"
        assert q2["answer"] is None

        # three suggestions, in the room's language, the most useful first
        sug = rep["suggestions"]
        assert len(sug) == 3 and all(CJK.search(s["text"]) for s in sug), sug
        kinds = [s["kind"] for s in sug]
        assert kinds[0] == "short" and "llm" in kinds, sug
        assert any(LLM_SUGGESTION in s["text"] for s in sug)
        assert [s["weight"] for s in sug] == sorted((s["weight"] for s in sug), reverse=True)

        # the links work: clip, answer media, chart
        for url in (q0["clip"]["video"], a1["media"], a1["expression_chart"]):
            got = httpx.get(f"{api}{url}", timeout=60)
            assert got.status_code == 200, (url, got.text[:200])
        chart = httpx.get(f"{api}{a1['expression_chart']}", timeout=60)
        assert chart.content[:8] == b"\x89PNG\r\n\x1a\n"

        # HTML: by Accept and at report.html; user text escaped
        for page in (
            httpx.get(f"{api}/v1/rooms/{z}/report", headers={"Accept": "text/html"}, timeout=30),
            httpx.get(f"{api}/v1/rooms/{z}/report.html", timeout=30),
        ):
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            html = page.text
            assert '<html lang="zh">' in html and "面试报告" in html
            assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
            for q in questions:
                assert q in html or q.replace('"', "&quot;") in html
            for s in sug:
                assert s["text"] in html
            assert f'src="/v1/feedback/{z}/chart.png?index=1"' in html
            assert f'src="/v1/files/tests/{z}_0.mp4"' in html
            assert "hello world" in html
        assert httpx.get(f"{api}/v1/rooms/no-such-room/report", timeout=30).status_code == 404
    finally:
        llm.close()


def test_answer_worker_killed_mid_analysis_loses_nothing(
    db_url: str, redis_url: str, tmp_path: Path, procs: Any, helpers: Any
) -> None:
    from digihuman.jobs.queue import Keys, parse_record

    llm = FakeLLM()
    llm.delays = [30.0]  # the first evaluation hangs: the worker is killed inside it
    try:
        env = helpers.service_env(
            redis_url,
            tmp_path / "root",
            DIGIHUMAN_DATABASE_URL=db_url,
            DIGIHUMAN_QUESTIONS__OPENAI_BASE_URL=llm.url,
            DIGIHUMAN_QUESTIONS__RETRIES="0",
            DIGIHUMAN_QUESTIONS__TIMEOUT_S="60",
            DIGIHUMAN_ROOMS__EVALUATION="openai",
            DIGIHUMAN_ROOMS__CLIPS="false",
        )
        first = procs.worker("answer", env)
        api = procs.api(env)
        helpers.wait_ready(redis_url, "answer", timeout=60)
        r = httpx.get(
            f"{api}/create/zbjv2",
            params={"username": "k", "job": "Accountant", "count": 1, "lang": "en"},
            timeout=30,
        )
        z, (question,) = r.json()["zbjname"], r.json()["question"]
        reply = {**json.loads(EVAL_OK), "suggestion": "Name the result in numbers."}
        llm.replies[question] = [json.dumps(reply)]
        r = httpx.post(
            f"{api}/v1/rooms/{z}/answers/0",
            files={"file": ("a.wav", io.BytesIO((ASSETS / "speech_en.wav").read_bytes()))},
            timeout=60,
        )
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        _wait(lambda: len(llm.calls) == 1, "the first evaluation request", 60)
        assert httpx.get(f"{api}/v1/rooms/{z}/answers/0").json()["status"] == "analysing"
        first.kill()  # SIGKILL mid-analysis: no goodbye, the job stays pending on the stream
        first.wait(timeout=10)
        procs.worker("answer", env)  # takes the job over once it has been silent long enough

        def done() -> dict[str, Any] | None:
            a = httpx.get(f"{api}/v1/rooms/{z}/answers/0", timeout=30).json()
            return a if a["status"] in ("done", "failed") else None

        got = _wait(done, "the answer after the take-over", 90)
        assert got["status"] == "done" and got["evaluation"]["suggestion"] == reply["suggestion"]
        assert got["transcript"]["text"] == "hello world" and got["job"] == job
        assert len(llm.calls) == 2  # the second attempt asked again
        import redis

        rec = parse_record(
            redis.Redis.from_url(redis_url, decode_responses=True).hgetall(
                Keys("digihuman:").record(job)
            ),
            job,
        )
        assert rec is not None and rec.status == "done" and rec.attempts == 2, rec
        room = httpx.get(f"{api}/v1/rooms/{z}", timeout=30).json()
        assert [(a["index"], a["status"]) for a in room["answers"]] == [(0, "done")]
    finally:
        llm.close()
