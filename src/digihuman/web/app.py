"""The demo page (Gradio, port 7860): one tab per capability, every action an HTTP call to the API.

The page holds no logic of its own: uploads go to ``POST /v1/uploads``, renders to
``/v1/render`` (followed at ``/v1/jobs/{id}``), speech to ``/v1/tts``, rooms to
``/create/zbjv2`` and ``/v1/rooms/...``, the engines and their weights come from
``GET /v1/engines``, avatars from ``GET``/``DELETE /v1/avatars``; what it shows is what the API
answers. :class:`Page` holds one method per action (plain Python, testable without a browser);
:func:`build` lays out the tabs and wires them to it. Offline: Gradio's analytics and the Hugging
Face hub are turned off before Gradio is imported, and the theme names local fonts only (a CJK
one, ``fonts-wqy-microhei`` from install.sh, for the Chinese labels; no web font is fetched).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")

BUNDLED_PORTRAIT = "portrait.jpg"  # in digihuman/assets: the page uploads it like a visitor's
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
BBOX_SHIFT_RANGE = 40  # the slider's ± px (MuseTalk's useful range for one face is about ±15-40)
# Latin first, then the CJK faces (Debian's fonts-wqy-microhei first), then the generic family
FONTS = (
    "ui-sans-serif",
    "system-ui",
    "WenQuanYi Micro Hei",
    "Noto Sans CJK SC",
    "PingFang SC",
    "Microsoft YaHei",
    "sans-serif",
)
FONTS_MONO = ("ui-monospace", "WenQuanYi Micro Hei Mono", "monospace")
CSS = """
#render-progress progress { width: 100%; height: 1.2em; }
#engine-note code { white-space: pre-wrap; }
#bbox-shift:has(input[type=range]:disabled) { opacity: 0.5; }
"""

# label key → (English, Chinese)
LABELS: dict[str, tuple[str, str]] = {
    "title": ("digihuman — demo", "digihuman 数字人演示"),
    "lang": ("Language / 语言", "Language / 语言"),
    "tab_render": ("Render", "视频合成"),
    "tab_system": ("System", "系统状态"),
    "tab_interview": ("Interview", "模拟面试"),
    "tab_live": ("Live", "直播"),
    "tab_avatars": ("Avatars", "形象"),
    "portrait": ("Portrait upload (photo or video)", "上传人像（照片或视频）"),
    "bundled": (
        "…or a bundled portrait (used when nothing is uploaded)",
        "……或内置人像（未上传时使用）",
    ),
    "audio": ("Speech audio (upload or record)", "语音（上传或录音）"),
    "text": ("…or text to speak (Chinese or English)", "……或输入要说的文字（中文或英文）"),
    "engine": ("Lip-sync engine", "口型驱动引擎"),
    "bbox_shift": (
        "bbox_shift (px; moves the mouth mask's upper edge: + more mouth opening)",
        "bbox_shift（像素；移动嘴部遮罩上沿：正值张嘴更大）",
    ),
    "render_btn": ("Render", "开始合成"),
    "status": ("Status", "状态"),
    "video": ("Result", "结果视频"),
    "download": ("Download the MP4", "下载 MP4"),
    "refresh": ("Refresh", "刷新"),
    "weights": ("Engines and weights (GET /v1/engines)", "引擎与模型权重（GET /v1/engines）"),
    "workers": ("Workers and queues (/readyz, /metrics)", "工作进程与队列（/readyz、/metrics）"),
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
    "av_pick": ("Avatar to delete", "要删除的形象"),
    "delete": ("Delete…", "删除…"),
    "confirm_delete": ("Yes, delete it", "确认删除"),
    "cancel": ("Cancel", "取消"),
    # texts the page writes (not component labels)
    "unavailable": ("weights missing", "缺少权重"),
    "default": ("default", "默认"),
    "missing": ("missing", "缺少"),
    "fetch": ("fetch with", "下载命令"),
    "only_for": ("only for", "仅用于"),
    "not_selectable": ("is not selectable", "不可选"),
    "sure": ("Delete the prepared avatar", "删除已准备的形象"),
    "sure_tail": ("(its cached frames; the upload stays)?", "（其缓存帧；上传文件保留）？"),
    "deleted": ("deleted", "已删除"),
    "pick_first": ("pick an avatar first", "请先选择形象"),
}


def label(key: str, lang: str) -> str:
    en, zh = LABELS[key]
    return zh if lang == "zh" else en


class Api:
    """A small client of the digihuman API (the page's only way to do anything)."""

    def __init__(
        self, base: str, key: str | None = None, timeout: float = 60.0, transport: Any = None
    ) -> None:
        import httpx

        headers = {"X-API-Key": key} if key else {}
        self.base = base.rstrip("/")
        self.c = httpx.Client(
            base_url=self.base, timeout=timeout, headers=headers, transport=transport
        )

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


def bundled_portraits() -> dict[str, Path]:
    """The portraits shipped in ``digihuman/assets`` by name (the page's own files)."""
    folder = resources.files("digihuman.assets")
    found = {f.name: Path(str(f)) for f in folder.iterdir() if f.name.lower().endswith(IMAGE_EXTS)}
    return dict(sorted(found.items()))


def progress_html(p: float, text: str = "") -> str:
    """A plain ``<progress>`` bar (its ``value`` is the job's progress, 0..1)."""
    p = min(max(p, 0.0), 1.0)
    return (
        f'<div id="render-progress-bar"><progress value="{p:.3f}" max="1"></progress> '
        f"{p:.0%} {html.escape(text)}</div>"
    )


class Page:
    """The page's actions: each one HTTP call (or a few) to the API, shaped for a component."""

    def __init__(self, api: Api, work: Path | None = None) -> None:
        self.api = api
        self.work = work or Path(tempfile.mkdtemp(prefix="digihuman-web-"))
        self.portraits = bundled_portraits()

    def portrait_source(self, upload: str | None, bundled: str | None) -> str:
        """The data-root path of the portrait: the visitor's upload, else the bundled one
        picked (uploaded too: the API's data root need not hold it, nor be on this machine)."""
        if upload:
            return self.api.upload(upload)
        path = self.portraits.get(bundled or BUNDLED_PORTRAIT) or self.portraits[BUNDLED_PORTRAIT]
        return self.api.upload(str(path))

    # ---------------------------------------------------------------- engines (GET /v1/engines)
    def engines(self) -> dict[str, Any]:
        return dict(self.api.check(self.api.c.get("/v1/engines")))

    @staticmethod
    def lipsync(listing: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """The lip-sync kind's default name and its engines (name, available, options, ...)."""
        kind = listing.get("lipsync") or {}
        return str(kind.get("default") or ""), list(kind.get("engines") or [])

    def engine_choices(
        self, listing: dict[str, Any], lang: str
    ) -> tuple[list[tuple[str, str]], str, list[str], dict[str, list[str]]]:
        """Radio choices (label, name), the default, the unavailable names, options per name."""
        default, engines = self.lipsync(listing)
        choices = []
        unavailable = []
        options: dict[str, list[str]] = {}
        for e in engines:
            name = str(e["name"])
            options[name] = [str(o) for o in e.get("options") or []]
            text = name + (f" ({label('default', lang)})" if name == default else "")
            if not e.get("available"):
                unavailable.append(name)
                text += f" — {label('unavailable', lang)}"
            choices.append((text, name))
        return choices, default, unavailable, options

    def engine_note(self, listing: dict[str, Any], lang: str) -> str:
        """Markdown: for each unavailable lip-sync engine, the files missing and the fetch
        command the API names."""
        _, engines = self.lipsync(listing)
        lines = []
        for e in engines:
            if e.get("available"):
                continue
            files = list(e.get("missing") or [])
            missing = ", ".join(f"`{m}`" for m in files[:3])
            missing += f" (+{len(files) - 3})" if len(files) > 3 else ""
            lines.append(
                f"**{e['name']}** {label('not_selectable', lang)}: {label('missing', lang)} "
                f"{missing or '?'}; {label('fetch', lang)} `{e.get('fetch') or '?'}`"
            )
        return "\n\n".join(lines)

    # ---------------------------------------------------------------- render
    def render_body(
        self,
        source: str,
        speech: str,
        engine: str | None,
        bbox_shift: float | None,
        options: dict[str, list[str]],
    ) -> dict[str, Any]:
        """The ``/v1/render`` body: ``bbox_shift`` only for an engine that takes it."""
        body: dict[str, Any] = {"source": source, "audio": speech, "engine": engine or None}
        takes = "bbox_shift" in options.get(engine or "", [])
        body["bbox_shift"] = int(bbox_shift) if takes and bbox_shift is not None else None
        return body

    def render(
        self,
        portrait: str | None,
        bundled: str | None,
        audio: str | None,
        say: str,
        engine: str | None,
        bbox_shift: float | None,
        options: dict[str, list[str]] | None,
    ) -> Iterator[tuple[str, str, Any, Any]]:
        """Yields (status, progress bar, video, download) as the job goes."""
        try:
            yield "upload …", progress_html(0.0, "upload"), None, None
            source = self.portrait_source(portrait, bundled)
            if audio:
                speech = self.api.upload(audio)
            elif say.strip():
                yield "speech …", progress_html(0.0, "tts"), None, None
                speech = self.api.tts(say.strip())
            else:
                yield "give audio or text", progress_html(0.0), None, None
                return
            body = self.render_body(source, speech, engine, bbox_shift, options or {})
            rec = self.api.check(self.api.c.post("/v1/render", json=body))
            while rec["status"] not in ("done", "failed", "dead"):
                p = float(rec.get("progress") or 0.0)
                msg = f"{rec['id']}: {rec['status']} {p:.0%} {rec.get('message') or ''}"
                yield msg, progress_html(p, rec["status"]), None, None
                rec = self.api.check(self.api.c.get(f"/v1/jobs/{rec['id']}", params={"wait": 1}))
            if rec["status"] != "done":
                err = f"{rec['id']}: {rec['status']}: {rec.get('error')}"
                yield err, progress_html(float(rec.get("progress") or 0.0), "failed"), None, None
                return
            res = rec["result"]
            out = self.api.download(res["path"], self.work)
            applied = f"engine {res.get('engine')}, bbox_shift {json.dumps(res.get('bbox_shift'))}"
            yield (
                f"{rec['id']}: done → {res['path']} ({applied})",
                progress_html(1.0, "done"),
                str(out),
                str(out),
            )
        except Exception as exc:  # shown on the page; the API's message says what to do
            yield f"error: {exc}", progress_html(0.0, "error"), None, None

    # ---------------------------------------------------------------- system
    def weights_table(self) -> list[list[Any]]:
        """One row per engine of every kind: kind, name, default?, available (weights present
        and verified)?, the fetch command, what the API says of it, the missing files."""
        rows = []
        for kind, body in self.engines().items():
            if not isinstance(body, dict):
                continue
            for e in body.get("engines") or []:
                rows.append(
                    [
                        kind,
                        e["name"],
                        "✓" if e["name"] == body.get("default") else "",
                        "✓" if e.get("available") else "✗",
                        e.get("fetch") or "",
                        e.get("detail") or "",
                        "\n".join(e.get("missing") or []),
                    ]
                )
        return rows

    def workers_table(self) -> tuple[list[list[Any]], dict[str, Any]]:
        """Per job kind: workers alive (/readyz), queue depth, pending, dead letters
        (/metrics gauges); and /readyz's answer with its HTTP status."""
        r = self.api.c.get("/readyz")
        ready = dict(r.json())
        ready["http_status"] = r.status_code
        gauges: dict[str, dict[str, float]] = {}
        pat = re.compile(
            r'^digihuman_(queue_depth|queue_pending|dead_letters)\{kind="(\w+)"\} (\S+)'
        )
        for line in self.api.c.get("/metrics").text.splitlines():
            m = pat.match(line)
            if m:
                gauges.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
        workers = ready.get("workers") or {}
        rows = []
        for kind in sorted(set(workers) | set(gauges)):
            g = gauges.get(kind, {})
            rows.append(
                [
                    kind,
                    workers.get(kind, ""),
                    int(g.get("queue_depth", 0)),
                    int(g.get("queue_pending", 0)),
                    int(g.get("dead_letters", 0)),
                ]
            )
        return rows, ready

    # ---------------------------------------------------------------- avatars
    def avatars(self) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """Thumbnails (image sources fetched from the API) and the listing itself."""
        listing = dict(self.api.check(self.api.c.get("/v1/avatars")))
        pics = []
        for a in listing["avatars"]:
            src = a.get("source") or ""
            if src.lower().endswith(IMAGE_EXTS):
                try:
                    pics.append((str(self.api.download(src, self.work)), a["id"]))
                except Exception:  # a source the API does not serve: no thumbnail
                    continue
        return pics, listing

    def delete_avatar(self, avatar_id: str) -> dict[str, Any]:
        return dict(self.api.check(self.api.c.delete(f"/v1/avatars/{avatar_id}")))

    def prepare(self, avatar_id: str, path: str | None) -> str:
        # the render worker prepares and stores the avatar (render with avatar_id): a short
        # greeting is rendered with it, and the avatar is cached for later renders
        source = self.portrait_source(path, None)
        speech = self.api.tts("Hello.")
        body = {"source": source, "audio": speech, "avatar_id": avatar_id.strip()}
        rec = self.api.wait_job(self.api.check(self.api.c.post("/v1/render", json=body)))
        return f"{avatar_id}: prepared ({rec['id']})"

    # ---------------------------------------------------------------- interview
    def room_rows(self, z: str) -> list[list[Any]]:
        room = self.api.check(self.api.c.get(f"/v1/rooms/{z}"))
        rows = []
        for i, q in enumerate(room.get("questions", [])):
            clip = q.get("clip") or {}
            base = f"{self.api.base}/v1/files/"
            rows.append(
                [
                    i,
                    q.get("text", ""),
                    f"{clip.get('status', '')} {float(clip.get('progress') or 0):.0%}",
                    base + clip["audio"] if clip.get("audio") else "",
                    base + clip["video"] if clip.get("video") else "",
                ]
            )
        return rows


def build(api_url: str, api_key: str | None = None) -> Any:
    """The Gradio Blocks of the demo page, talking to the API at ``api_url``."""
    import gradio as gr

    page = Page(Api(api_url, api_key))
    api = page.api
    theme = gr.themes.Default(font=list(FONTS), font_mono=list(FONTS_MONO))
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
                with gr.Column():
                    portrait = L(
                        gr.File(label=label("portrait", "en"), elem_id="portrait", type="filepath"),
                        "portrait",
                    )
                    bundled = L(
                        gr.Dropdown(
                            list(page.portraits),
                            value=BUNDLED_PORTRAIT,
                            label=label("bundled", "en"),
                            elem_id="bundled",
                        ),
                        "bundled",
                    )
                    preview = gr.Image(
                        elem_id="bundled-preview",
                        interactive=False,
                        show_label=False,
                        height=160,
                    )
                with gr.Column():
                    audio = L(
                        gr.Audio(
                            label=label("audio", "en"),
                            type="filepath",
                            sources=["upload", "microphone"],
                            elem_id="audio",
                        ),
                        "audio",
                    )
                    text = L(gr.Textbox(label=label("text", "en"), elem_id="text"), "text")
            with gr.Row():
                engine = L(
                    gr.Radio([], label=label("engine", "en"), elem_id="engine", scale=1), "engine"
                )
                bbox = L(
                    gr.Slider(
                        -BBOX_SHIFT_RANGE,
                        BBOX_SHIFT_RANGE,
                        value=0,
                        step=1,
                        label=label("bbox_shift", "en"),
                        interactive=False,
                        elem_id="bbox-shift",
                        scale=2,
                    ),
                    "bbox_shift",
                )
            engine_note = gr.Markdown(elem_id="engine-note")
            # what the radio needs to know (from GET /v1/engines): options per engine, and the
            # unavailable names (a hidden textbox: the browser-side script reads it)
            engine_opts = gr.State({})
            engine_default = gr.State("")
            engine_off = gr.Textbox(visible="hidden", elem_id="engine-off")
            render_btn = gr.Button(label("render_btn", "en"), variant="primary", elem_id="render")
            bar = gr.HTML(progress_html(0.0), elem_id="render-progress")
            status = L(gr.Textbox(label=label("status", "en"), elem_id="status"), "status")
            video = L(gr.Video(label=label("video", "en"), elem_id="video"), "video")
            dl = L(gr.File(label=label("download", "en"), elem_id="download"), "download")

        def load_engines(lg: str, current: str | None = None) -> tuple[Any, ...]:
            try:
                listing = page.engines()
                choices, default, off, opts = page.engine_choices(listing, lg)
                note = page.engine_note(listing, lg)
            except Exception as exc:
                return gr.update(), f"error: {exc}", {}, "", ""
            keep = current if current in opts and current not in off else default
            return (
                gr.update(choices=choices, value=keep),
                note,
                opts,
                default,
                ",".join(off),
            )

        def pick_engine(
            name: str | None, opts: dict[str, list[str]], default: str, off: str
        ) -> tuple[Any, Any]:
            if name and name in off.split(","):  # listed, not selectable: back to the default
                name = default
            takes = "bbox_shift" in opts.get(name or "", [])
            return gr.update(value=name), gr.update(interactive=takes)

        # the unavailable engines' radio inputs are disabled in the browser, too
        disable_js = """(off) => {
          const names = (off || '').split(',').filter(Boolean);
          document.querySelectorAll('#engine input[type=radio]').forEach(i => {
            i.disabled = names.includes(i.value);
            const l = i.closest('label'); if (l) l.style.opacity = i.disabled ? 0.5 : 1;
          });
          return off;
        }"""

        def show_bundled(name: str | None) -> Any:
            src = page.portraits.get(name or "") or page.portraits[BUNDLED_PORTRAIT]
            copy = page.work / f"bundled-{src.name}"  # Gradio serves files from its temp dirs
            if not copy.exists():
                shutil.copyfile(src, copy)
            return str(copy)

        demo.load(
            load_engines, lang, [engine, engine_note, engine_opts, engine_default, engine_off]
        ).then(pick_engine, [engine, engine_opts, engine_default, engine_off], [engine, bbox]).then(
            None, engine_off, None, js=disable_js
        )
        demo.load(show_bundled, bundled, preview)  # the page's own file: no API call
        bundled.change(show_bundled, bundled, preview)
        engine.change(
            pick_engine, [engine, engine_opts, engine_default, engine_off], [engine, bbox]
        ).then(None, engine_off, None, js=disable_js)
        render_btn.click(
            page.render,
            [portrait, bundled, audio, text, engine, bbox, engine_opts],
            [status, bar, video, dl],
        )

        # ------------------------------------------------------------------ System
        with gr.Tab(label("tab_system", "en"), elem_id="tab-system") as t_system:
            refresh = gr.Button(label("refresh", "en"), elem_id="sys-refresh")
            weights = L(
                gr.Dataframe(
                    headers=[
                        "kind",
                        "engine",
                        "default",
                        "available",
                        "fetch",
                        "detail",
                        "missing",
                    ],
                    label=label("weights", "en"),
                    elem_id="sys-engines",
                    wrap=True,
                ),
                "weights",
            )
            workers = L(
                gr.Dataframe(
                    headers=["kind", "workers alive", "queue depth", "pending", "dead letters"],
                    label=label("workers", "en"),
                    elem_id="sys-workers",
                ),
                "workers",
            )
            ready = gr.JSON(label="/readyz", elem_id="readyz")

        def do_system() -> tuple[Any, Any, Any]:
            try:
                engines = page.weights_table()
            except Exception as exc:
                engines = [["error", str(exc), "", "", "", "", ""]]
            try:
                rows, body = page.workers_table()
            except Exception as exc:
                return engines, None, {"error": str(exc)}
            return engines, rows, body

        refresh.click(do_system, None, [weights, workers, ready])
        t_system.select(do_system, None, [weights, workers, ready])

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

        def do_create(job_title: str, n: float) -> tuple[str, Any]:
            try:
                r = api.check(
                    api.c.get(
                        "/create/zbjv2",
                        params={"username": "web", "job": job_title, "count": int(n)},
                    )
                )
                return r["zbjname"], page.room_rows(r["zbjname"])
            except Exception as exc:
                return f"error: {exc}", None

        def do_iv_refresh(z: str) -> Any:
            try:
                return page.room_rows(z.strip())
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
            thumbs = gr.Gallery(
                elem_id="av-thumbs",
                columns=6,
                height=220,
                allow_preview=False,
                fit_columns=False,
                object_fit="cover",
            )
            with gr.Row():
                av_pick = L(
                    gr.Dropdown([], label=label("av_pick", "en"), elem_id="av-pick", scale=2),
                    "av_pick",
                )
                delete_btn = gr.Button(label("delete", "en"), variant="stop", elem_id="av-delete")
            with gr.Row(visible=False, elem_id="av-confirm-row") as confirm_row:
                confirm_text = gr.Markdown(elem_id="av-confirm-text")
                confirm_btn = gr.Button(
                    label("confirm_delete", "en"), variant="stop", elem_id="av-confirm"
                )
                cancel_btn = gr.Button(label("cancel", "en"), elem_id="av-cancel")
            gallery = L(gr.JSON(label=label("gallery", "en"), elem_id="av-gallery"), "gallery")

        def do_list(keep: str | None = None) -> tuple[Any, Any, Any]:
            try:
                pics, listing = page.avatars()
            except Exception as exc:
                return None, {"error": str(exc)}, gr.update()
            ids = [a["id"] for a in listing["avatars"]]
            pick = keep if keep in ids else (ids[0] if ids else None)
            return pics, listing, gr.update(choices=ids, value=pick)

        def do_prepare(avatar_id: str, path: str | None) -> tuple[str, Any, Any, Any]:
            try:
                msg = page.prepare(avatar_id, path)
            except Exception as exc:
                return f"error: {exc}", None, None, gr.update()
            return (msg, *do_list(avatar_id.strip()))

        def ask_delete(avatar_id: str | None, lg: str) -> tuple[Any, str, Any]:
            if not avatar_id:
                return gr.update(visible=False), "", label("pick_first", lg)
            sure = f"{label('sure', lg)} **{avatar_id}** {label('sure_tail', lg)}"
            return gr.update(visible=True), sure, gr.update()

        def do_delete(avatar_id: str | None, lg: str) -> tuple[Any, ...]:
            hide = gr.update(visible=False)
            try:
                out = page.delete_avatar(str(avatar_id))
            except Exception as exc:
                return (hide, f"error: {exc}", *do_list(avatar_id))
            return (hide, f"{out['deleted']}: {label('deleted', lg)}", *do_list())

        def pick_thumb(evt: Any) -> Any:  # a click on a thumbnail picks that avatar
            cap = evt.value.get("caption") if isinstance(evt.value, dict) else None
            return gr.update(value=cap) if cap else gr.update()

        # Gradio passes the event to a parameter annotated SelectData; the annotations here are
        # strings (postponed) naming a local import, which Gradio cannot resolve: so, the class
        pick_thumb.__annotations__["evt"] = gr.SelectData

        prepare_btn.click(do_prepare, [av_id, av_source], [av_status, thumbs, gallery, av_pick])
        list_btn.click(do_list, av_pick, [thumbs, gallery, av_pick])
        t_avatars.select(do_list, av_pick, [thumbs, gallery, av_pick])
        thumbs.select(pick_thumb, None, av_pick)
        delete_btn.click(ask_delete, [av_pick, lang], [confirm_row, confirm_text, av_status])
        cancel_btn.click(lambda: gr.update(visible=False), None, confirm_row)
        confirm_btn.click(
            do_delete, [av_pick, lang], [confirm_row, av_status, thumbs, gallery, av_pick]
        )

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
            (delete_btn, "delete"),
            (confirm_btn, "confirm_delete"),
            (cancel_btn, "cancel"),
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
        ).then(  # the engine radio's texts and the note are the page's own words: again
            load_engines,
            [lang, engine],
            [engine, engine_note, engine_opts, engine_default, engine_off],
        ).then(pick_engine, [engine, engine_opts, engine_default, engine_off], [engine, bbox]).then(
            None, engine_off, None, js=disable_js
        )
    demo.digihuman_theme = theme  # Gradio 6 takes the theme and the CSS at launch()
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
        css=CSS,
        footer_links=[],
    )
