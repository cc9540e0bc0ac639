"""The demo page (Gradio, port 7860): one tab per capability, every action an HTTP call to the API.

The page holds no logic of its own: uploads go to ``POST /v1/uploads``, renders to
``/v1/render`` (followed at ``/v1/jobs/{id}``), speech to ``/v1/tts``, rooms to
``/create/zbjv2`` and ``/v1/rooms/...``; what it shows is what the API answers. Offline: Gradio's
analytics and the Hugging Face hub are turned off before Gradio is imported, and the theme uses
the system's fonts (no Google Fonts request).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")

BUNDLED_PORTRAIT = "data/portrait.jpg"  # the data root's copy of the bundled portrait

# label key → (English, Chinese)
LABELS: dict[str, tuple[str, str]] = {
    "title": ("digihuman — demo", "digihuman 数字人演示"),
    "lang": ("Language / 语言", "Language / 语言"),
    "tab_render": ("Render", "视频合成"),
    "tab_system": ("System", "系统状态"),
    "tab_interview": ("Interview", "模拟面试"),
    "tab_live": ("Live", "直播"),
    "tab_avatars": ("Avatars", "形象"),
    "portrait": (
        "Portrait (photo or video; empty: the bundled portrait)",
        "人像（照片或视频，留空用内置人像）",
    ),
    "audio": ("Speech audio (upload or record)", "语音（上传或录音）"),
    "text": ("…or text to speak (Chinese or English)", "……或输入要说的文字（中文或英文）"),
    "render_btn": ("Render", "开始合成"),
    "status": ("Status", "状态"),
    "video": ("Result", "结果视频"),
    "download": ("Download", "下载"),
    "refresh": ("Refresh", "刷新"),
    "verify": ("Verify weights (digihuman models verify)", "校验模型权重"),
    "job": ("Job title", "岗位"),
    "count": ("Questions", "题目数量"),
    "create_room": ("Create the interview", "创建面试"),
    "room": ("Room (zbjname)", "房间号"),
    "questions": ("Questions", "题目"),
    "q_index": ("Question number (from 0)", "题号（从 0 开始）"),
    "answer": ("Your answer (audio or video)", "你的回答（音频或视频）"),
    "upload_answer": ("Upload the answer", "上传回答"),
    "report_btn": ("Report", "面试报告"),
    "new_live": ("New live room", "新建直播间"),
    "open_live": ("Open the stream", "打开直播"),
    "say": ("Text for the avatar to say", "让数字人说的话"),
    "say_btn": ("Speak", "播报"),
    "interrupt": ("Interrupt", "打断"),
    "live_audio": ("…or upload audio: spoken at once", "……或上传音频：立即播报"),
    "list_avatars": ("List avatars", "列出形象"),
    "av_id": ("Avatar id", "形象 ID"),
    "prepare": ("Prepare the avatar", "准备形象"),
    "gallery": ("Prepared avatars", "已准备的形象"),
}


def label(key: str, lang: str) -> str:
    en, zh = LABELS[key]
    return zh if lang == "zh" else en


class Api:
    """A small client of the digihuman API (the page's only way to do anything)."""

    def __init__(self, base: str, key: str | None = None, timeout: float = 60.0) -> None:
        import httpx

        headers = {"X-API-Key": key} if key else {}
        self.base = base.rstrip("/")
        self.c = httpx.Client(base_url=self.base, timeout=timeout, headers=headers)

    def check(self, r: Any) -> Any:
        if r.status_code >= 400:
            try:
                msg = r.json().get("message", r.text)
            except ValueError:
                msg = r.text
            raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {msg}")
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r

    def upload(self, path: str) -> str:
        with open(path, "rb") as f:
            r = self.c.post("/v1/uploads", params={"name": Path(path).name}, content=f.read())
        return str(self.check(r)["path"])

    def tts(self, text: str) -> str:
        rec = self.check(self.c.post("/v1/tts", json={"text": text, "wait": 30}))
        rec = self.wait_job(rec)
        return str(rec["result"]["path"])

    def wait_job(self, rec: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while rec["status"] not in ("done", "failed", "dead"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {rec['id']} still {rec['status']} after {timeout:.0f} s")
            rec = self.check(self.c.get(f"/v1/jobs/{rec['id']}", params={"wait": 1}))
        if rec["status"] != "done":
            raise RuntimeError(f"job {rec['id']} {rec['status']}: {rec.get('error')}")
        return rec

    def download(self, rel: str, folder: Path) -> Path:
        r = self.c.get(f"/v1/files/{rel}")
        self.check(r)
        dest = folder / Path(rel).name
        dest.write_bytes(r.content)
        return dest


def build(api_url: str, api_key: str | None = None) -> Any:
    """The Gradio Blocks of the demo page, talking to the API at ``api_url``."""
    import gradio as gr

    api = Api(api_url, api_key)
    work = Path(tempfile.mkdtemp(prefix="digihuman-web-"))
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    labelled: list[tuple[Any, str]] = []

    def L(component: Any, key: str) -> Any:
        labelled.append((component, key))
        return component

    with gr.Blocks(title="digihuman", analytics_enabled=False) as demo:
        title = gr.Markdown(f"## {label('title', 'en')}")
        lang = gr.Radio(["en", "zh"], value="en", label=label("lang", "en"), elem_id="lang")

        # ------------------------------------------------------------------ Render
        with gr.Tab(label("tab_render", "en"), elem_id="tab-render") as t_render:
            with gr.Row():
                portrait = L(
                    gr.File(label=label("portrait", "en"), elem_id="portrait", type="filepath"),
                    "portrait",
                )
                audio = L(
                    gr.Audio(label=label("audio", "en"), type="filepath", elem_id="audio"),
                    "audio",
                )
            text = L(gr.Textbox(label=label("text", "en"), elem_id="text"), "text")
            render_btn = gr.Button(label("render_btn", "en"), variant="primary", elem_id="render")
            status = L(gr.Textbox(label=label("status", "en"), elem_id="status"), "status")
            video = L(gr.Video(label=label("video", "en"), elem_id="video"), "video")
            dl = L(gr.File(label=label("download", "en"), elem_id="download"), "download")

        def do_render(
            portrait_path: str | None, audio_path: str | None, say: str, progress: Any = None
        ) -> Iterator[tuple[str, Any, Any]]:
            prog = progress or gr.Progress()
            prog(0.0, desc="upload")
            try:
                source = api.upload(portrait_path) if portrait_path else BUNDLED_PORTRAIT
                if audio_path:
                    speech = api.upload(audio_path)
                elif say.strip():
                    yield "speech …", None, None
                    speech = api.tts(say.strip())
                else:
                    yield "give audio or text", None, None
                    return
                rec = api.check(api.c.post("/v1/render", json={"source": source, "audio": speech}))
                while rec["status"] not in ("done", "failed", "dead"):
                    p = float(rec.get("progress") or 0.0)
                    prog(p, desc=f"render {rec['status']}")
                    yield (
                        f"{rec['id']}: {rec['status']} {p:.0%} {rec.get('message') or ''}",
                        None,
                        None,
                    )
                    rec = api.check(api.c.get(f"/v1/jobs/{rec['id']}", params={"wait": 1}))
                if rec["status"] != "done":
                    yield f"{rec['id']}: {rec['status']}: {rec.get('error')}", None, None
                    return
                out = api.download(rec["result"]["path"], work)
                yield f"{rec['id']}: done → {rec['result']['path']}", str(out), str(out)
            except Exception as exc:  # shown on the page; the API's message says what to do
                yield f"error: {exc}", None, None

        render_btn.click(do_render, [portrait, audio, text], [status, video, dl])

        # ------------------------------------------------------------------ System
        with gr.Tab(label("tab_system", "en"), elem_id="tab-system") as t_system:
            refresh = gr.Button(label("refresh", "en"), elem_id="sys-refresh")
            ready = gr.JSON(label="/readyz", elem_id="readyz")
            metrics = gr.Code(label="/metrics (queues, workers)", elem_id="metrics")
            verify_btn = gr.Button(label("verify", "en"), elem_id="sys-verify")
            verify_out = gr.Code(label="digihuman models verify", elem_id="verify")

        def do_system() -> tuple[Any, str]:
            try:
                r = api.c.get("/readyz")
                body = r.json()
                body["http_status"] = r.status_code
                m = api.c.get("/metrics").text
            except Exception as exc:
                return {"error": str(exc)}, ""
            keep = re.compile(r"^digihuman_(queue|jobs_pending|dead|workers|live)\w*[{ ]")
            lines = [ln for ln in m.splitlines() if keep.match(ln)]
            return body, "\n".join(lines)

        def do_verify() -> str:
            import subprocess
            import sys

            p = subprocess.run(
                [sys.executable, "-m", "digihuman", "models", "verify"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            return p.stdout + p.stderr + "\n(fetch the rest: digihuman models download)"

        refresh.click(do_system, None, [ready, metrics])
        verify_btn.click(do_verify, None, verify_out)

        # ------------------------------------------------------------------ Interview
        with gr.Tab(label("tab_interview", "en"), elem_id="tab-interview") as t_interview:
            with gr.Row():
                job = L(gr.Textbox(value="Java开发工程师", label=label("job", "en")), "job")
                count = L(gr.Number(value=3, minimum=1, maximum=20, precision=0), "count")
                create_btn = gr.Button(label("create_room", "en"), elem_id="iv-create")
            iv_room = L(gr.Textbox(label=label("room", "en"), elem_id="iv-room"), "room")
            iv_questions = L(
                gr.Dataframe(
                    headers=["#", "question", "clip", "audio", "video"], elem_id="iv-questions"
                ),
                "questions",
            )
            iv_refresh = gr.Button(label("refresh", "en"), elem_id="iv-refresh")
            with gr.Row():
                q_index = L(
                    gr.Number(value=0, precision=0, label=label("q_index", "en")), "q_index"
                )
                answer = L(gr.File(label=label("answer", "en"), elem_id="iv-answer"), "answer")
                answer_btn = gr.Button(label("upload_answer", "en"), elem_id="iv-upload")
            answer_out = gr.JSON(label="answer", elem_id="iv-answer-out")
            report_btn = gr.Button(label("report_btn", "en"), elem_id="iv-report")
            report_out = gr.JSON(label="report", elem_id="iv-report-out")

        def room_rows(z: str) -> list[list[Any]]:
            room = api.check(api.c.get(f"/v1/rooms/{z}"))
            rows = []
            for i, q in enumerate(room.get("questions", [])):
                clip = q.get("clip") or {}
                rows.append(
                    [
                        i,
                        q.get("text", ""),
                        f"{clip.get('status', '')} {float(clip.get('progress') or 0):.0%}",
                        f"{api.base}/v1/files/{clip['audio']}" if clip.get("audio") else "",
                        f"{api.base}/v1/files/{clip['video']}" if clip.get("video") else "",
                    ]
                )
            return rows

        def do_create(job_title: str, n: float) -> tuple[str, Any]:
            try:
                r = api.check(
                    api.c.get(
                        "/create/zbjv2",
                        params={"username": "web", "job": job_title, "count": int(n)},
                    )
                )
                return r["zbjname"], room_rows(r["zbjname"])
            except Exception as exc:
                return f"error: {exc}", None

        def do_iv_refresh(z: str) -> Any:
            try:
                return room_rows(z.strip())
            except Exception:
                return None

        def do_answer(z: str, idx: float, path: str | None) -> Any:
            if not path:
                return {"message": "choose a file"}
            try:
                with open(path, "rb") as f:
                    files = {"file": (Path(path).name, f, "application/octet-stream")}
                    r = api.c.post(f"/v1/rooms/{z.strip()}/answers/{int(idx)}", files=files)
                return api.check(r)
            except Exception as exc:
                return {"error": str(exc)}

        def do_report(z: str) -> Any:
            try:
                return api.check(api.c.get(f"/v1/rooms/{z.strip()}/report"))
            except Exception as exc:
                return {"error": str(exc)}

        create_btn.click(do_create, [job, count], [iv_room, iv_questions])
        iv_refresh.click(do_iv_refresh, iv_room, iv_questions)
        answer_btn.click(do_answer, [iv_room, q_index, answer], answer_out)
        report_btn.click(do_report, iv_room, report_out)

        # ------------------------------------------------------------------ Live
        with gr.Tab(label("tab_live", "en"), elem_id="tab-live") as t_live:
            with gr.Row():
                live_room = L(gr.Textbox(label=label("room", "en"), elem_id="live-room"), "room")
                new_live = gr.Button(label("new_live", "en"), elem_id="live-new")
                open_live = gr.Button(label("open_live", "en"), elem_id="live-open")
            viewer = gr.HTML(elem_id="live-viewer")
            with gr.Row():
                say_text = L(gr.Textbox(label=label("say", "en"), elem_id="live-text"), "say")
                say_btn = gr.Button(label("say_btn", "en"), elem_id="live-say")
                stop_btn = gr.Button(label("interrupt", "en"), elem_id="live-interrupt")
            live_audio = L(
                gr.Audio(label=label("live_audio", "en"), type="filepath", elem_id="live-audio"),
                "live_audio",
            )
            live_out = gr.JSON(label="live", elem_id="live-out")

        def do_new_live() -> str:
            try:
                return str(
                    api.check(api.c.get("/create/zbj", params={"username": "web"}))["message"]
                )
            except Exception as exc:
                return f"error: {exc}"

        def do_open(z: str) -> tuple[str, Any]:
            z = z.strip()
            try:
                st = api.check(api.c.post(f"/v1/rooms/{z}/live"))
            except Exception as exc:
                return "", {"error": str(exc)}
            src = f"{api.base}/v1/rooms/{z}/view"
            frame = (
                f'<iframe id="live-frame" src="{src}" allow="autoplay" '
                'style="width:100%;height:560px;border:0"></iframe>'
            )
            return frame, st

        def do_say(z: str, say: str, audio_path: str | None = None) -> Any:
            try:
                wav = api.upload(audio_path) if audio_path else api.tts(say.strip())
                return api.check(
                    api.c.post("/v1/human", json={"zbjname": z.strip(), "audioUrl": wav})
                )
            except Exception as exc:
                return {"error": str(exc)}

        def do_interrupt(z: str) -> Any:
            try:
                return api.check(api.c.post(f"/v1/rooms/{z.strip()}/interrupt"))
            except Exception as exc:
                return {"error": str(exc)}

        new_live.click(do_new_live, None, live_room)
        open_live.click(do_open, live_room, [viewer, live_out])
        say_btn.click(do_say, [live_room, say_text], live_out)
        live_audio.upload(lambda z, p: do_say(z, "", p), [live_room, live_audio], live_out)
        stop_btn.click(do_interrupt, live_room, live_out)

        # ------------------------------------------------------------------ Avatars
        with gr.Tab(label("tab_avatars", "en"), elem_id="tab-avatars") as t_avatars:
            with gr.Row():
                av_id = L(
                    gr.Textbox(value="alice", label=label("av_id", "en"), elem_id="av-id"), "av_id"
                )
                av_source = L(
                    gr.File(label=label("portrait", "en"), type="filepath", elem_id="av-source"),
                    "portrait",
                )
            prepare_btn = gr.Button(label("prepare", "en"), elem_id="av-prepare")
            av_status = L(gr.Textbox(label=label("status", "en"), elem_id="av-status"), "status")
            list_btn = gr.Button(label("list_avatars", "en"), elem_id="av-list")
            thumbs = gr.Gallery(elem_id="av-thumbs", columns=6, height=220)
            gallery = L(gr.JSON(label=label("gallery", "en"), elem_id="av-gallery"), "gallery")

        def do_list() -> tuple[Any, Any]:
            try:
                listing = api.check(api.c.get("/v1/avatars"))
            except Exception as exc:
                return None, {"error": str(exc)}
            pics = []
            for a in listing["avatars"]:
                src = a.get("source") or ""
                if src.lower().endswith((".jpg", ".jpeg", ".png", ".webp", ".bmp")):
                    try:
                        pics.append((str(api.download(src, work)), a["id"]))
                    except Exception:  # a source the API does not serve: no thumbnail
                        continue
            return pics, listing

        def do_prepare(avatar_id: str, path: str | None) -> tuple[str, Any, Any]:
            # the render worker prepares and stores the avatar (render with avatar_id): a short
            # greeting is rendered with it, and the avatar is cached for later renders
            try:
                source = api.upload(path) if path else BUNDLED_PORTRAIT
                speech = api.tts("Hello.")
                body = {"source": source, "audio": speech, "avatar_id": avatar_id.strip()}
                rec = api.wait_job(api.check(api.c.post("/v1/render", json=body)))
                pics, listing = do_list()
                return f"{avatar_id}: prepared ({rec['id']})", pics, listing
            except Exception as exc:
                return f"error: {exc}", None, None

        prepare_btn.click(do_prepare, [av_id, av_source], [av_status, thumbs, gallery])
        list_btn.click(do_list, None, [thumbs, gallery])

        # ------------------------------------------------------------------ language switch
        tabs = [
            (t_render, "tab_render"),
            (t_system, "tab_system"),
            (t_interview, "tab_interview"),
            (t_live, "tab_live"),
            (t_avatars, "tab_avatars"),
        ]
        buttons = [
            (render_btn, "render_btn"),
            (refresh, "refresh"),
            (verify_btn, "verify"),
            (create_btn, "create_room"),
            (iv_refresh, "refresh"),
            (answer_btn, "upload_answer"),
            (report_btn, "report_btn"),
            (new_live, "new_live"),
            (open_live, "open_live"),
            (say_btn, "say_btn"),
            (stop_btn, "interrupt"),
            (list_btn, "list_avatars"),
            (prepare_btn, "prepare"),
        ]

        def switch(lg: str) -> list[Any]:
            out: list[Any] = [f"## {label('title', lg)}"]
            out += [gr.update(label=label(k, lg)) for _, k in tabs]
            out += [gr.update(value=label(k, lg)) for _, k in buttons]
            out += [gr.update(label=label(k, lg)) for _, k in labelled]
            return out

        lang.change(
            switch,
            lang,
            [title, *[c for c, _ in tabs], *[c for c, _ in buttons], *[c for c, _ in labelled]],
        )
    demo.digihuman_theme = theme  # Gradio 6 takes the theme at launch()
    return demo


def serve(
    api_url: str, host: str = "127.0.0.1", port: int = 7860, api_key: str | None = None
) -> None:
    """Build the page and serve it (blocks)."""
    demo = build(api_url, api_key)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        theme=demo.digihuman_theme,
        footer_links=[],
    )
