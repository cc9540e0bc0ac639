"""``digihuman models download`` and ``digihuman models verify``.

MuseTalk weights go to ``<data root>/models`` in the official layout; ``--whisper NAME`` and
``--funasr`` fetch the larger speech models where the ASR settings look for them. ``verify``
also lists the Kokoro TTS files (placed by ``scripts/install.sh``) with their checksums.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from digihuman.cli import app

models_app = typer.Typer(help="Fetch and check model weights (MuseTalk, whisper, FunASR, Kokoro).",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(models_app, name="models")


def _models_dir(models_dir: Path | None) -> Path:
    if models_dir is not None:
        return models_dir
    from digihuman.config import load_settings

    return load_settings().models_dir


@models_app.command("download")
def download(
    version: str | None = typer.Option(
        None, "--version", help="MuseTalk version: v1 | v15 | all (default v1)."
    ),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Default: <data>/models."),
    optional: bool = typer.Option(False, "--optional", help="Also fetch dwpose (unused)."),
    timeout: float = typer.Option(10.0, "--timeout", help="Network timeout per request (s)."),
    whisper: str | None = typer.Option(
        None, "--whisper", help="Also a faster-whisper model: small | medium | large-v3 | ..."
    ),
    funasr: bool = typer.Option(False, "--funasr", help="Also FunASR paraformer-zh (+vad, punc)."),
) -> None:
    """Fetch missing files (resumable), record their SHA-256 in models/manifest.json.

    With only ``--whisper`` / ``--funasr`` no MuseTalk file is fetched.
    """
    if whisper or funasr:
        _download_speech(whisper, funasr, timeout)
        if version is None:
            return
    version = version or "v1"
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

    from digihuman.engines.lipsync.musetalk import weights as W

    root = _models_dir(models_dir)
    versions = list(W.VERSIONS) if version == "all" else [version]
    failed = False
    with Progress(TextColumn("{task.description:<48}"), BarColumn(), DownloadColumn(),
                  disable=not sys.stderr.isatty(), transient=True) as bar:  # fmt: skip
        tasks: dict[str, TaskID] = {}

        def report(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        for v in versions:
            rows = W.download(root, v, include_optional=optional, timeout=timeout, report=report)
            for wf, state in rows:
                typer.echo(f"{v:4} {wf.path:45} {state}")
                failed = failed or state.startswith("failed")
    if failed:
        typer.echo("some files failed; run the command again to resume", err=True)
        raise typer.Exit(1)


def _download_speech(whisper: str | None, funasr: bool, timeout: float) -> None:
    from digihuman.config import load_settings

    asr = load_settings().asr
    if whisper:
        from digihuman.engines.asr import download_whisper
        from digihuman.engines.asr.whisper import default_model_dir

        root = Path(asr.model_dir) if asr.model_dir else default_model_dir()
        dest = download_whisper(whisper, root / whisper, timeout_s=timeout)
        typer.echo(f"whisper {whisper}: {dest}  (use it: DIGIHUMAN_ASR__MODEL={whisper})")
    if funasr:
        from digihuman.engines.asr.funasr import default_funasr_dir, download_funasr

        dest = download_funasr(default_funasr_dir())
        typer.echo(f"funasr: {dest}  (use it: DIGIHUMAN_ASR__ENGINE=funasr)")


@models_app.command("verify")
def verify(
    version: str = typer.Option(
        "auto", "--version", help="v1 | v15 | all | auto (the versions whose UNet is present)."
    ),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Default: <data>/models."),
) -> None:
    """Check every file: present, checksum as recorded, loads strictly with the right shapes.

    Exit status 0 when every required file of the version(s) is good, 1 otherwise.
    """
    from digihuman.engines.lipsync.musetalk import weights as W

    root = _models_dir(models_dir)
    if version == "auto":
        unets = {"v1": "musetalk/pytorch_model.bin", "v15": "musetalkV15/unet.pth"}
        versions = [v for v, rel in unets.items() if (root / rel).is_file()] or ["v1"]
    else:
        versions = list(W.VERSIONS) if version == "all" else [version]
    for v in versions:
        W.check_version(v)
    rows = W.verify(root, versions)
    bad = _verify_speech()
    width = max(len(r.path) for r in rows)
    typer.echo(f"models: {root}")
    typer.echo(f"{'file':{width}}  {'ver':4} {'status':8} detail")
    for r in rows:
        status = "ok" if r.ok else ("missing" if r.detail == "missing" else "BAD")
        if not r.ok and not r.required:
            status = "optional"
        detail = "" if r.detail == "missing" else r.detail
        typer.echo(f"{r.path:{width}}  {r.version:4} {status:8} {detail}")
        bad = bad or (r.required and not r.ok)
    if bad:
        typer.echo(f"some files are missing or bad; {W.DOWNLOAD_HINT}", err=True)
        raise typer.Exit(1)


def _verify_speech() -> bool:
    """List the offline speech files (Kokoro model, vocabulary, voices) with their checksums;
    True when one is present but bad. Missing ones are listed with the command that installs
    them (Mandarin then falls back to espeak-ng)."""
    from digihuman.config import load_settings
    from digihuman.engines.tts import kokoro_files as K

    tts = load_settings().tts
    root = Path(tts.kokoro_dir).expanduser() if tts.kokoro_dir else K.default_kokoro_dir()
    rows = K.check_files(root)
    width = max(len(r.path) for r in rows)
    typer.echo(f"kokoro (tts): {root}")
    typer.echo(f"{'file':{width}}  {'status':8} detail")
    for r in rows:
        typer.echo(f"{r.path:{width}}  {r.status:8} {r.detail}")
    if any(r.status == "missing" for r in rows):
        typer.echo(f"kokoro files are missing (Mandarin falls back to espeak-ng); {K.INSTALL_HINT}")
    typer.echo("")
    return any(r.status == "BAD" for r in rows)
