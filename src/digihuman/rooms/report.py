"""A room's report for the candidate: per question its clip, the transcript, the delivery
metrics, the content evaluation and the expression feedback, and the three most useful
suggestions, in the room's language. JSON (:func:`build_report`) and one HTML page
(:func:`render_html`, everything user-written escaped).

The suggestions are rules over the metrics (an answer far too short or long, a pace outside
the comfortable band, many fillers, long pauses, slow starts, the face out of frame or the gaze
away from the camera, questions left unanswered), each with a weight; an LLM evaluation's own
suggestion joins them, weighted by how low its score is. Each kind of advice is given once
(for the question where it matters most) and the three heaviest are kept; when fewer apply,
general interview advice fills the list.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .store import AnswerView, QuestionView, RoomView

_T: dict[str, dict[str, str]] = {
    "zh": {
        "short": "第{q}题的回答只有约{s}秒，建议时长约{t}秒："
        "补充一个具体的例子，说明你做了什么、结果如何。",
        "long": "第{q}题的回答约{s}秒，超过建议时长（约{t}秒）较多：先给结论，再用一两个要点支撑。",
        "fast": "第{q}题语速约每分钟{r}字，偏快：放慢一点，在要点之间稍作停顿。",
        "slow": "第{q}题语速约每分钟{r}字，偏慢：提前梳理要点，说得更连贯一些。",
        "fillers": "第{q}题出现{n}次口头禅（{w}）：想停顿时安静地停一下，而不是说“嗯”“那个”。",
        "pauses": "第{q}题有{n}次较长停顿（最长{l}秒）：先列出两三个要点再作答，可减少卡顿。",
        "lead_in": "第{q}题开口前沉默了{l}秒：可以先复述问题或说出思路框架，争取思考时间。",
        "silent": "第{q}题没有识别到有效语音：检查麦克风，并确保回答时声音清晰。",
        "failed": "第{q}题的录音无法分析（{e}）：请重新录制并上传。",
        "face": "第{q}题只有{p}%的画面里能看到你的脸：调整摄像头，让脸保持在画面中央。",
        "gaze": "第{q}题只有{p}%的时间看向镜头：回答时多看摄像头，就像看着面试官。",
        "unanswered": "还有{n}道题没有回答（第{qs}题）：每道题都作答，面试官才能全面了解你。",
        "llm": "第{q}题：{text}",
        "star": "回答行为类问题时用STAR结构：情境、任务、行动、结果，并说明你个人的贡献。",
        "numbers": "用数字说明成果，例如提升了多少、节省了多少时间，让回答更有说服力。",
        "practice": "把回答录下来回看，练习开头一句话就点明重点。",
        "title": "面试报告",
        "question": "问题",
        "clip": "提问视频",
        "answer": "你的回答",
        "transcript": "文字记录",
        "delivery": "表达",
        "rate": "语速",
        "per_min_zh": "字/分钟",
        "per_min_en": "词/分钟",
        "fillers_l": "口头禅",
        "pauses_l": "长停顿",
        "length": "时长",
        "suggested": "建议",
        "evaluation": "内容评价",
        "relevance": "相关性",
        "structure": "结构",
        "score": "得分",
        "expression": "表情与眼神",
        "face_l": "脸部可见",
        "gaze_l": "看镜头",
        "dominant": "主要表情",
        "suggestions": "最值得改进的三点",
        "none": "未回答",
        "pending": "分析中…",
        "failed_l": "分析失败",
        "chart": "表情时间线",
    },
    "en": {
        "short": "Your answer to question {q} lasted about {s} s; about {t} s is expected: add "
        "a concrete example of what you did and how it turned out.",
        "long": "Your answer to question {q} ran about {s} s, well over the suggested {t} s: "
        "lead with your conclusion, then back it with one or two points.",
        "fast": "You spoke about {r} words a minute in question {q}, on the fast side: slow "
        "down and pause briefly between points.",
        "slow": "You spoke about {r} words a minute in question {q}, on the slow side: outline "
        "your points first so the answer flows.",
        "fillers": "Question {q} had {n} filler words ({w}): when you need a moment, pause "
        "silently instead of saying “um” or “like”.",
        "pauses": "Question {q} had {n} long pauses (longest {l} s): jot down two or three "
        "points before you start to keep the answer moving.",
        "lead_in": "You were silent for {l} s before starting question {q}: restate the "
        "question or name your approach to buy thinking time.",
        "silent": "No speech was recognised in your answer to question {q}: check your "
        "microphone and speak clearly.",
        "failed": "Your recording for question {q} could not be analysed ({e}): record it "
        "again and upload it.",
        "face": "Your face was visible in only {p}% of question {q}: adjust the camera so your "
        "face stays centred in the frame.",
        "gaze": "You looked at the camera only {p}% of the time in question {q}: look into the "
        "lens as if it were the interviewer.",
        "unanswered": "{n} question(s) were not answered (question {qs}): answer every "
        "question so the interviewer sees your full range.",
        "llm": "Question {q}: {text}",
        "star": "Structure behavioural answers with STAR: situation, task, action, result, "
        "and say what you personally did.",
        "numbers": "Quantify your results (how much faster, how much saved) to make answers "
        "convincing.",
        "practice": "Record yourself and play it back; practise opening with a one-sentence "
        "answer to the question.",
        "title": "Interview report",
        "question": "Question",
        "clip": "Question clip",
        "answer": "Your answer",
        "transcript": "Transcript",
        "delivery": "Delivery",
        "rate": "Pace",
        "per_min_zh": "characters/min",
        "per_min_en": "words/min",
        "fillers_l": "Filler words",
        "pauses_l": "Long pauses",
        "length": "Length",
        "suggested": "suggested",
        "evaluation": "Content",
        "relevance": "Relevance",
        "structure": "Structure",
        "score": "Score",
        "expression": "Expression and eye contact",
        "face_l": "Face visible",
        "gaze_l": "Looking at camera",
        "dominant": "Dominant expressions",
        "suggestions": "Your three most useful improvements",
        "none": "Not answered",
        "pending": "Being analysed…",
        "failed_l": "Analysis failed",
        "chart": "Expression timeline",
    },
}


def _lang(view: RoomView) -> str:
    return "zh" if view.language == "zh" else "en"


def _share(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _rules(
    lang: str, q: QuestionView, a: AnswerView, expr: Mapping[str, Any] | None
) -> list[tuple[float, str, str]]:
    """(weight, kind, text) of the advice one answer calls for."""
    t = _T[lang]
    n = q.index + 1
    out: list[tuple[float, str, str]] = []
    d = a.data.get("delivery") or {}
    if a.status == "failed":
        err = (a.error or "?").split(";")[0][:120]
        out.append((7.0, "failed", t["failed"].format(q=n, e=err)))
    if a.status == "done" and d:
        length = d.get("length", {})
        if d.get("units", 0) == 0:
            out.append((10.0, "silent", t["silent"].format(q=n)))
        elif length.get("verdict") == "short":
            w = 6.0 + 4.0 * (1.0 - float(length.get("ratio", 0)))
            out.append(
                (w, "short", t["short"].format(q=n, s=round(length["answer_s"]), t=q.suggested_s))
            )
        elif length.get("verdict") == "long":
            w = 4.0 + min(3.0, float(length.get("ratio", 0)) - 1.6)
            out.append(
                (w, "long", t["long"].format(q=n, s=round(length["answer_s"]), t=q.suggested_s))
            )
        rate = float(d.get("rate_per_min", 0))
        low, high = d.get("rate_band", [0, 1e9])
        if d.get("rate") == "fast":
            out.append(
                (4.0 + min(3.0, rate / high - 1) * 3, "fast", t["fast"].format(q=n, r=round(rate)))
            )
        elif d.get("rate") == "slow":
            out.append(
                (3.5 + min(3.0, 1 - rate / low) * 3, "slow", t["slow"].format(q=n, r=round(rate)))
            )
        f = d.get("fillers", {})
        if f.get("total", 0) >= 3 and f.get("per_min", 0) >= 3:
            items = sorted(f.get("items", {}).items(), key=lambda kv: -kv[1])[:3]
            words = (
                "、".join(k for k, _ in items) if lang == "zh" else ", ".join(k for k, _ in items)
            )
            w = 3.0 + min(4.0, float(f["per_min"]) / 3)
            out.append((w, "fillers", t["fillers"].format(q=n, n=f["total"], w=words)))
        p = d.get("pauses", {})
        if p.get("count", 0) >= 2 or p.get("longest_s", 0) >= 4:
            w = 3.0 + min(3.0, p.get("count", 0) * 0.5 + p.get("longest_s", 0) / 4)
            out.append((w, "pauses", t["pauses"].format(q=n, n=p["count"], l=p["longest_s"])))
        if p.get("lead_in_s", 0) >= 5:
            out.append(
                (
                    2.5 + min(2.0, p["lead_in_s"] / 10),
                    "lead_in",
                    t["lead_in"].format(q=n, l=round(p["lead_in_s"])),
                )
            )
    ev = a.data.get("evaluation")
    if isinstance(ev, dict) and ev.get("suggestion"):
        w = 2.0 + (100 - float(ev.get("score", 50))) / 12.5  # score 20 → 8.4, 90 → 2.8
        out.append((w, f"llm-{q.index}", t["llm"].format(q=n, text=ev["suggestion"])))
    if expr:
        face = _share(expr.get("face_visible"))
        gaze = _share(expr.get("looking_at_camera"))
        if face is not None and face < 0.8:
            out.append((5.0 + (0.8 - face) * 5, "face", t["face"].format(q=n, p=round(face * 100))))
        elif gaze is not None and gaze < 0.6:
            out.append((3.0 + (0.6 - gaze) * 5, "gaze", t["gaze"].format(q=n, p=round(gaze * 100))))
    return out


def suggestions(
    view: RoomView, feedback: Mapping[int, Mapping[str, Any]] | None = None, k: int = 3
) -> list[dict[str, Any]]:
    """The ``k`` most useful pieces of advice for the room's candidate (see the module doc)."""
    lang = _lang(view)
    t = _T[lang]
    answers = {a.index: a for a in view.answers}
    best: dict[str, tuple[float, str, int | None]] = {}
    for q in view.questions:
        a = answers.get(q.index)
        if a is None:
            continue
        expr = (feedback or {}).get(q.index)
        for w, kind, text in _rules(lang, q, a, expr):
            if kind not in best or w > best[kind][0]:
                best[kind] = (w, text, q.index)
    missing = [q.index + 1 for q in view.questions if q.index not in answers]
    if missing and answers:
        qs = "、".join(map(str, missing)) if lang == "zh" else ", ".join(map(str, missing))
        best["unanswered"] = (4.5, t["unanswered"].format(n=len(missing), qs=qs), None)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
    out = [
        {"kind": kind.split("-")[0], "text": text, "question": qi, "weight": round(w, 2)}
        for kind, (w, text, qi) in ranked
    ]
    behavioural = any(q.competency == "behavioural" for q in view.questions)
    for kind in ("star" if behavioural else "numbers", "numbers", "practice", "star"):
        if len(out) >= k:
            break
        if all(o["kind"] != kind for o in out):
            out.append({"kind": kind, "text": t[kind], "question": None, "weight": 0.0})
    return out[:k]


def _expr_summary(fb: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not fb:
        return None
    keep = (
        "status",
        "error",
        "face_visible",
        "looking_at_camera",
        "dominant_expressions",
        "smile",
        "blinks_per_minute",
        "head_movement",
        "duration_s",
    )
    return {k: fb[k] for k in keep if k in fb}


def build_report(
    view: RoomView,
    feedback: Mapping[int, Mapping[str, Any]] | None = None,
    *,
    files_url: str = "/v1/files/",
    chart_url: str | None = None,
) -> dict[str, Any]:
    """The report as JSON. ``feedback``: the expression feedback per question index (the
    stored rows of msId = zbjname, as ``GET /v1/feedback/{msId}`` gives them); ``chart_url``:
    the chart link of one answer, ``{index}`` in it replaced (e.g.
    ``/v1/feedback/<zbjname>/chart.png?index={index}``)."""
    answers = {a.index: a for a in view.answers}
    feedback = feedback or {}
    questions = []
    for q in view.questions:
        a = answers.get(q.index)
        entry: dict[str, Any] = {
            "index": q.index,
            "text": q.text,
            "competency": q.competency,
            "suggested_s": q.suggested_s,
            "clip": {
                "status": q.clip_status,
                "video": files_url + q.video_path if q.video_path else None,
                "audio": files_url + q.audio_path if q.audio_path else None,
            },
            "answer": None,
        }
        if a is not None:
            tr = a.data.get("transcript") or {}
            entry["answer"] = {
                "status": a.status,
                "error": a.error,
                "media": files_url + a.media_path if a.media_path else None,
                "media_type": a.media_type,
                "duration_s": a.duration_s,
                "transcript": tr.get("text"),
                "transcript_language": tr.get("language"),
                "delivery": a.data.get("delivery"),
                "evaluation": a.data.get("evaluation"),
                "evaluation_error": a.data.get("evaluation_error"),
                "expression": _expr_summary(feedback.get(q.index)),
                "expression_chart": chart_url.format(index=q.index)
                if chart_url and a.media_type == "video"
                else None,
            }
        questions.append(entry)
    done = [a for a in view.answers if a.status == "done" and a.data.get("delivery")]
    rates = [float(a.data["delivery"]["rate_per_min"]) for a in done if a.data["delivery"]["units"]]
    return {
        "zbjname": view.zbjname,
        "owner": view.owner,
        "job": view.job,
        "language": view.language,
        "status": view.status,
        "created": view.created_at,
        "summary": {
            "questions": len(view.questions),
            "answered": len(view.answers),
            "analysed": len(done),
            "pending": sum(a.status in ("uploaded", "analysing") for a in view.answers),
            "failed": sum(a.status == "failed" for a in view.answers),
            "mean_rate_per_min": round(sum(rates) / len(rates), 1) if rates else None,
            "fillers": sum(int(a.data["delivery"]["fillers"]["total"]) for a in done),
            "long_pauses": sum(int(a.data["delivery"]["pauses"]["count"]) for a in done),
        },
        "questions": questions,
        "suggestions": suggestions(view, feedback),
    }


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _pct(v: Any) -> str:
    s = _share(v)
    return "–" if s is None else f"{round(s * 100)}%"


def render_html(report: Mapping[str, Any], *, link_suffix: str = "") -> str:
    """One self-contained page (inline CSS, no scripts); ``link_suffix`` is appended to media
    links (e.g. ``?key=...`` when the page was opened with an API key in the URL)."""
    lang = "zh" if report.get("language") == "zh" else "en"
    t = _T[lang]

    def link(url: str | None) -> str:
        url = url or ""
        if link_suffix.startswith("?") and "?" in url:
            return _e(url + "&" + link_suffix[1:])
        return _e(url + link_suffix)

    parts = [
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(t['title'])} · {_e(report.get('job') or report.get('zbjname'))}</title>",
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem;color:#222}section{border-top:1px solid #ddd;padding:1rem 0}"
        "video,audio{max-width:100%}table{border-collapse:collapse}td,th{padding:.2rem .6rem;"
        "text-align:left;border-bottom:1px solid #eee}.tip{background:#f4f8ff;padding:.6rem 1rem;"
        "margin:.4rem 0;border-left:4px solid #3b6fd8}.muted{color:#777}</style></head><body>",
        f"<h1>{_e(t['title'])}</h1>",
        f"<p>{_e(report.get('owner'))} · {_e(report.get('job'))} · "
        f'<span class="muted">{_e(report.get("zbjname"))}</span></p>',
        f"<h2>{_e(t['suggestions'])}</h2><ol>",
    ]
    for s in report.get("suggestions", []):
        parts.append(f'<li class="tip">{_e(s["text"])}</li>')
    parts.append("</ol>")
    for q in report.get("questions", []):
        n = int(q["index"]) + 1
        parts.append(f"<section><h2>{_e(t['question'])} {n}</h2><p>{_e(q['text'])}</p>")
        if q["clip"].get("video"):
            parts.append(
                f'<p><video controls preload="none" src="{link(q["clip"]["video"])}" '
                f'title="{_e(t["clip"])}"></video></p>'
            )
        a = q.get("answer")
        if not a:
            parts.append(f'<p class="muted">{_e(t["none"])}</p></section>')
            continue
        parts.append(f"<h3>{_e(t['answer'])}</h3>")
        if a.get("media"):
            tag = "video" if a.get("media_type") == "video" else "audio"
            parts.append(f'<p><{tag} controls preload="none" src="{link(a["media"])}"></{tag}></p>')
        if a["status"] in ("uploaded", "analysing"):
            parts.append(f'<p class="muted">{_e(t["pending"])}</p>')
        elif a["status"] == "failed":
            parts.append(f'<p class="muted">{_e(t["failed_l"])}: {_e(a.get("error"))}</p>')
        if a.get("transcript") is not None:
            parts.append(f"<h4>{_e(t['transcript'])}</h4><p>{_e(a['transcript'])}</p>")
        d = a.get("delivery")
        if d:
            unit = t["per_min_zh"] if d.get("language") == "zh" else t["per_min_en"]
            f = d.get("fillers", {})
            items = ", ".join(f"{k} ×{v}" for k, v in f.get("items", {}).items())
            p = d.get("pauses", {})
            ln = d.get("length", {})
            parts += [
                f"<h4>{_e(t['delivery'])}</h4><table>",
                f"<tr><th>{_e(t['rate'])}</th><td>{_e(d.get('rate_per_min'))} {_e(unit)} "
                f"({_e(d.get('rate'))})</td></tr>",
                f"<tr><th>{_e(t['fillers_l'])}</th><td>{_e(f.get('total'))} "
                f"<span class='muted'>{_e(items)}</span></td></tr>",
                f"<tr><th>{_e(t['pauses_l'])}</th><td>{_e(p.get('count'))} "
                f"(≥ {_e(p.get('threshold_s'))} s)</td></tr>",
                f"<tr><th>{_e(t['length'])}</th><td>{_e(ln.get('answer_s'))} s / "
                f"{_e(t['suggested'])} {_e(ln.get('suggested_s'))} s ({_e(ln.get('verdict'))})"
                "</td></tr></table>",
            ]
        ev = a.get("evaluation")
        if ev:
            star = ", ".join(ev.get("structure", {}).get("star", [])) or "–"
            parts += [
                f"<h4>{_e(t['evaluation'])}</h4><table>",
                f"<tr><th>{_e(t['relevance'])}</th><td>{_e(ev.get('relevance'))}/10</td></tr>",
                f"<tr><th>{_e(t['structure'])}</th><td>STAR: {_e(star)} "
                f"<span class='muted'>{_e(ev.get('structure', {}).get('comment'))}</span>"
                "</td></tr>",
                f"<tr><th>{_e(t['score'])}</th><td>{_e(ev.get('score'))}/100</td></tr></table>",
                f"<p class='tip'>{_e(ev.get('suggestion'))}</p>",
            ]
        x = a.get("expression")
        if x or a.get("expression_chart"):
            parts.append(f"<h4>{_e(t['expression'])}</h4>")
            if x:
                dom = ", ".join(
                    f"{d.get('label')} {_pct(d.get('share'))}"
                    for d in (x.get("dominant_expressions") or [])
                    if isinstance(d, dict)
                )
                parts += [
                    "<table>",
                    f"<tr><th>{_e(t['face_l'])}</th><td>{_pct(x.get('face_visible'))}</td></tr>",
                    f"<tr><th>{_e(t['gaze_l'])}</th><td>{_pct(x.get('looking_at_camera'))}"
                    "</td></tr>",
                    f"<tr><th>{_e(t['dominant'])}</th><td>{_e(dom)}</td></tr></table>",
                ]
            if a.get("expression_chart"):
                parts.append(
                    f'<p><img alt="{_e(t["chart"])}" style="max-width:100%" '
                    f'src="{link(a["expression_chart"])}"></p>'
                )
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)
