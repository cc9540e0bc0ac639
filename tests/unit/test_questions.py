"""Question engines: the bank, the job matcher, the sampler, and the network engines against a
real local HTTP server (127.0.0.1) that answers well, malformed, wrong, failing and slow."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from digihuman.config import QuestionsSettings
from digihuman.engines.questions import create_questions, detect_language, normalise_language
from digihuman.engines.questions.bank import GENERAL, BankQuestions, load_bank, sample
from digihuman.engines.questions.base import COMPETENCIES, QuestionEngine, has_cjk
from digihuman.engines.questions.llm import BadAnswer, check_answer, parse_json
from digihuman.errors import InputError


@pytest.fixture(scope="module")
def engine() -> BankQuestions:
    return BankQuestions()


# --------------------------------------------------------------------------------------------
# the bank


def test_bank_size_languages_tags(engine: BankQuestions) -> None:
    bank = engine.bank
    assert len(bank.questions) >= 400
    families = Counter(q.family for q in bank.questions)
    assert len([f for f in families if f != GENERAL]) >= 20
    assert families[GENERAL] >= 100
    assert all(n >= 10 for n in families.values())
    comps = Counter(q.competency for q in bank.questions)
    for c in ("technical", "behavioural", "situational", "motivation", "teamwork"):
        assert comps[c] >= 20, c
    assert set(comps) <= set(COMPETENCIES)
    for q in bank.questions:
        assert has_cjk(q.zh) and not has_cjk(q.en) and len(q.en.split()) >= 4, q.id
    ids = [q.id for q in bank.questions]
    assert len(set(ids)) == len(ids)
    assert len({q.zh for q in bank.questions}) == len({q.en for q in bank.questions}) == len(ids)


def test_bank_refuses_a_malformed_file(tmp_path: Any) -> None:
    from digihuman.engines.questions.bank import BANK_DIR, BankError

    (tmp_path / "families.json").write_bytes((BANK_DIR / "families.json").read_bytes())
    (tmp_path / "questions.txt").write_text("@software\ntechnical | only English | English\n")
    with pytest.raises(BankError, match="line 2"):
        load_bank(tmp_path)
    (tmp_path / "questions.txt").write_text("@nosuchfamily\n")
    with pytest.raises(BankError, match="unknown family"):
        load_bank(tmp_path)


# --------------------------------------------------------------------------------------------
# matching job titles


@pytest.mark.parametrize(
    ("title", "family"),
    [
        ("Senior Software Engineer", "software"),
        ("Java开发工程师", "software"),
        ("后端开发", "software"),
        ("前端开发工程师", "frontend"),
        ("Frontend Developer (React)", "frontend"),
        ("数据分析师", "data"),
        ("Data Scientists", "data"),  # plural
        ("大模型算法工程师", "ml"),
        ("ML Engineer", "ml"),
        ("运维工程师", "devops"),
        ("Site Reliability Engineer", "devops"),
        ("软件测试工程师", "qa"),
        ("产品经理", "product"),
        ("Product Owner", "product"),
        ("UI设计师", "design"),
        ("Product Designer", "design"),
        ("新媒体运营", "marketing"),
        ("Sales Representative", "sales"),
        ("会计", "finance"),
        ("招聘专员", "hr"),
        ("客服专员", "customer_service"),
        ("小学语文老师", "teaching"),
        ("Registered Nurse", "healthcare"),
        ("机械设计工程师", "mechanical"),
        ("嵌入式软件工程师", "electronics"),
        ("土木工程师", "civil"),
        ("法务专员", "legal"),
        ("采购专员", "logistics"),
        ("行政助理", "admin"),
        ("Project Manager", "project"),
    ],
)
def test_matcher_titles(engine: BankQuestions, title: str, family: str) -> None:
    assert engine.matcher.match(title)[0] == family


@pytest.mark.parametrize(
    ("title", "family"),
    [("sofware enginer", "software"), ("Data Analist", "data"), ("机器学系工程师", "ml")],
)
def test_matcher_fuzzy(engine: BankQuestions, title: str, family: str) -> None:
    assert engine.matcher.match(title)[0] == family


@pytest.mark.parametrize("title", ["宇航员", "Astronaut", "xyzzy", "", "!!!", "a" * 300])
def test_unknown_job_falls_back_to_general(engine: BankQuestions, title: str) -> None:
    assert engine.matcher.match(title) == (GENERAL,)
    qs = engine.generate(title or "?", 20, language="en", seed=3)
    assert len(qs.questions) == 20
    assert {q.family for q in qs.questions} == {GENERAL}
    assert len({q.competency for q in qs.questions}) >= 5


# --------------------------------------------------------------------------------------------
# sampling


def test_language_follows_the_title() -> None:
    assert detect_language("Java开发工程师") == "zh"
    assert detect_language("Java developer") == "en"
    assert normalise_language("zh-CN") == "zh" and normalise_language("EN") == "en"
    assert normalise_language(None) is None
    with pytest.raises(InputError):
        normalise_language("fr")


@pytest.mark.parametrize("language", ["zh", "en"])
def test_sets_are_in_the_asked_language(engine: BankQuestions, language: str) -> None:
    qs = engine.generate("产品经理", 10, language=language, seed=1)
    assert all(has_cjk(q.text) == (language == "zh") for q in qs.questions)
    assert all(q.language == language for q in qs.questions)


def test_no_repeats_at_the_bound_for_every_family(engine: BankQuestions) -> None:
    for fam in engine.bank.families:
        for seed in range(3):
            picked = sample(engine.bank, [fam], 20, language="zh", seed=seed)
            assert len(picked) == 20, fam
            assert len({q.id for q in picked}) == 20
            assert len({q.zh for q in picked}) == 20


def test_reproducible_from_the_seed(engine: BankQuestions) -> None:
    a = engine.generate("Java开发工程师", 8, language="zh", seed=42).texts
    b = BankQuestions().generate("Java开发工程师", 8, language="zh", seed=42).texts
    assert a == b
    others = {
        tuple(engine.generate("Java开发工程师", 8, language="zh", seed=s).texts) for s in range(10)
    }
    assert len(others) >= 9  # different seeds, different sets


def test_competencies_are_mixed_and_family_first(engine: BankQuestions) -> None:
    qs = engine.generate("Senior Software Engineer", 5, language="en", seed=7)
    comps = [q.competency for q in qs.questions]
    assert comps.count("technical") >= 2 and len(set(comps)) >= 4
    assert [q.family for q in qs.questions if q.competency == "technical"] == ["software"] * 2
    assert qs.families == ("software",) and qs.engine == "bank"


def test_exclude_never_draws_those(engine: BankQuestions) -> None:
    first = engine.generate("会计", 10, language="zh", seed=5)
    ids = [q.id for q in first.questions if q.id]
    second = engine.generate("会计", 10, language="zh", seed=5, exclude=ids)
    assert not set(second.texts) & set(first.texts)
    third = engine.generate("会计", 10, language="zh", seed=5, exclude=first.texts)
    assert not set(third.texts) & set(first.texts)


def test_registry_and_settings() -> None:
    e = create_questions(QuestionsSettings())
    assert isinstance(e, QuestionEngine) and e.name == "bank"
    assert create_questions(QuestionsSettings(engine="fake")).name == "fake"
    with pytest.raises(InputError, match="unknown questions engine"):
        create_questions(QuestionsSettings(engine="nope"))
    with pytest.raises(InputError, match="BASE_URL"):
        create_questions(QuestionsSettings(engine="openai"))


# --------------------------------------------------------------------------------------------
# schema checks


def test_parse_and_check_answers() -> None:
    good = {"questions": [{"text": "请介绍你自己。", "competency": "motivation"}, "你为什么来？"]}
    assert check_answer(good, 2, "zh") == [
        ("请介绍你自己。", "motivation"),
        ("你为什么来？", "other"),
    ]
    assert parse_json('```json\n{"questions": []}\n```') == {"questions": []}
    assert parse_json('Sure! Here: {"questions": ["x"]} hope it helps') == {"questions": ["x"]}
    with pytest.raises(BadAnswer):
        parse_json("no json here")
    with pytest.raises(BadAnswer, match="not in zh"):
        check_answer({"questions": ["Why do you want this job?"]}, 1, "zh")
    with pytest.raises(BadAnswer, match="usable"):
        check_answer({"questions": ["你为什么来？", "你为什么来？"]}, 2, "zh")  # a repeat
    with pytest.raises(BadAnswer):
        check_answer({"questions": [{"text": 5}]}, 1, "en")
    with pytest.raises(BadAnswer):
        check_answer({"answers": []}, 1, "en")


# --------------------------------------------------------------------------------------------
# network engines against a local server


class FakeLLM:
    """A real HTTP server on 127.0.0.1 answering from a script of behaviours, in order:
    ``("json", obj)`` 200 with ``obj``; ``("text", s)`` 200 with a raw body; ``("status", n)``;
    ``("sleep", s, obj)`` wait, then answer ``obj``. The last behaviour repeats."""

    def __init__(self) -> None:
        self.script: list[tuple[Any, ...]] = []
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                fake.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("authorization")}
                )
                i = min(len(fake.requests) - 1, len(fake.script) - 1)
                kind, *args = fake.script[i]
                if kind == "sleep":
                    time.sleep(args[0])
                    kind, args = "json", [args[1]]
                if kind == "status":
                    self.send_response(args[0])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                data = (json.dumps(args[0]) if kind == "json" else args[0]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                # the client may have given up (timeout)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    f = FakeLLM()
    yield f
    f.close()


def _chat(content: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def _qs(texts: list[str], comp: str = "technical") -> str:
    return json.dumps({"questions": [{"text": t, "competency": comp} for t in texts]})


ZH3 = ["请讲讲你最熟悉的数据库。", "你如何做代码评审？", "说说你处理过的线上故障。"]


def _openai(url: str, **kw: Any) -> Any:
    s = QuestionsSettings(
        engine="openai", openai_base_url=f"{url}/v1", openai_api_key="sk-test", **kw
    )
    return create_questions(s)


def test_openai_good_answer(llm: FakeLLM) -> None:
    llm.script = [("json", _chat("```json\n" + _qs(ZH3) + "\n```"))]
    qs = _openai(llm.url).generate("Java开发工程师", 3, language="zh", seed=9)
    assert qs.engine == "openai" and qs.fallback is None
    assert qs.texts == ZH3 and {q.competency for q in qs.questions} == {"technical"}
    req = llm.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "gpt-4o-mini" and req["body"]["seed"] == 9
    assert req["body"]["response_format"] == {"type": "json_object"}
    assert "Java开发工程师" in req["body"]["messages"][-1]["content"]


def test_openai_malformed_then_good_is_retried(llm: FakeLLM) -> None:
    llm.script = [("json", _chat("{not json")), ("json", _chat(_qs(ZH3)))]
    qs = _openai(llm.url).generate("Java开发工程师", 3, language="zh", seed=1)
    assert qs.engine == "openai" and qs.texts == ZH3 and len(llm.requests) == 2


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (("json", _chat("I cannot help with that.")), "malformed"),
        (("text", "<html>oops</html>"), "malformed"),  # not even an OpenAI body
        (("json", {"choices": []}), "malformed"),
        (("json", _chat(_qs(["Tell me about yourself please."] * 3))), "malformed"),  # language
        (("json", _chat(_qs(ZH3[:1]))), "malformed"),  # too few
        (("status", 500), "HTTP 500"),
        (("status", 401), "HTTP 401"),
    ],
)
def test_openai_bad_answers_fall_back_to_the_bank(
    llm: FakeLLM, behaviour: tuple[Any, ...], reason: str
) -> None:
    llm.script = [behaviour]
    qs = _openai(llm.url, retries=1).generate("Java开发工程师", 3, language="zh", seed=4)
    assert qs.engine == "bank" and qs.fallback is not None and reason in qs.fallback
    assert len(qs.questions) == 3 and all(has_cjk(t) for t in qs.texts)
    assert qs.texts == BankQuestions().generate("Java开发工程师", 3, language="zh", seed=4).texts
    assert len(llm.requests) == 2  # one retry


def test_openai_timeout_falls_back_in_bounded_time(llm: FakeLLM) -> None:
    llm.script = [("sleep", 3.0, _chat(_qs(ZH3)))]
    t0 = time.monotonic()
    qs = _openai(llm.url, timeout_s=0.5, retries=1).generate("数据分析师", 3, language="zh", seed=2)
    elapsed = time.monotonic() - t0
    assert qs.engine == "bank" and "timed out" in str(qs.fallback)
    assert elapsed < 2.9  # two 0.5 s attempts and a short backoff, not the server's 3 s
    assert len(llm.requests) == 2


def test_openai_unreachable_falls_back() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    qs = _openai(f"http://127.0.0.1:{port}", retries=0).generate("nurse", 2, language="en", seed=1)
    assert qs.engine == "bank" and qs.fallback and "Connect" in qs.fallback


def _dify(url: str, **kw: Any) -> Any:
    s = QuestionsSettings(engine="dify", dify_base_url=url, dify_api_key="app-key", **kw)
    return create_questions(s)


def test_dify_good_answer(llm: FakeLLM) -> None:
    en = ["How do you plan a lesson?", "How do you handle a noisy class?"]
    llm.script = [("json", {"answer": json.dumps(en), "conversation_id": "c1"})]
    qs = _dify(llm.url).generate("Teacher", 2, language="en", seed=1)
    assert qs.engine == "dify" and qs.texts == en
    req = llm.requests[0]
    assert req["path"] == "/chat-messages" and req["auth"] == "Bearer app-key"
    assert req["body"]["response_mode"] == "blocking"
    assert req["body"]["inputs"] == {"job": "Teacher", "count": 2, "language": "en"}


def test_dify_malformed_and_slow_fall_back(llm: FakeLLM) -> None:
    llm.script = [("json", {"answer": "1. How? 2. Why?"}), ("sleep", 2.0, {"answer": "[]"})]
    qs = _dify(llm.url, timeout_s=0.4, retries=1).generate("Teacher", 2, language="en", seed=1)
    assert qs.engine == "bank" and "timed out" in str(qs.fallback)
    assert qs.families == ("teaching",) and len(qs.questions) == 2
    llm.requests.clear()
    llm.script = [("json", {"message": "no answer field"})]
    qs = _dify(llm.url, retries=0).generate("Teacher", 2, language="en", seed=1)
    assert qs.engine == "bank" and "malformed" in str(qs.fallback)
