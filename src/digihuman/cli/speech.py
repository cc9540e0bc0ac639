"""``digihuman tts`` and ``digihuman asr``."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import typer

from digihuman.cli import app


@app.command("tts")
def tts_command(
    text: str = typer.Argument(
        ..., help="What to say (Chinese, English or both); '-' reads stdin."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The WAV file to write."),
    voice: str | None = typer.Option(None, "--voice", help="A voice of the engine."),
    engine: str | None = typer.Option(
        None, "--engine", help="auto | piper | espeak | openai | edge | cosyvoice | fake"
    ),
    language: str | None = typer.Option(
        None, "--language", "-l", help="zh | en (default: detected per sentence)"
    ),
    sample_rate: int | None = typer.Option(
        None, "--sample-rate", help="Resample to this rate (default: the engine's own)."
    ),
) -> None:
    """Speak TEXT into a WAV file."""
    from digihuman.config import load_settings
    from digihuman.engines.tts import create_tts, synthesize_array
    from digihuman.media.audio import save_wav

    if text == "-":
        text = sys.stdin.read()
    settings = load_settings()
    tts = create_tts(settings.tts, engine)
    start = time.perf_counter()
    x, rate = synthesize_array(
        tts,
        text,
        voice=voice or settings.tts.voice,
        language=language or settings.tts.language,
        sample_rate=sample_rate,
    )
    elapsed = time.perf_counter() - start
    save_wav(output, x, rate)
    seconds = len(x) / rate if rate else 0.0
    typer.echo(f"{output}: {seconds:.2f} s of speech at {rate} Hz ({tts.name}, {elapsed:.2f} s)")


@app.command("asr")
def asr_command(
    file: Path = typer.Argument(..., help="Audio or video file with speech."),
    language: str | None = typer.Option(
        None, "--language", "-l", help="zh | en | ... (default: detected)"
    ),
    engine: str | None = typer.Option(None, "--engine", help="whisper | openai | funasr | fake"),
    as_json: bool = typer.Option(False, "--json", help="Print text, language and segments."),
) -> None:
    """Transcribe FILE (Chinese is written in Simplified characters)."""
    from digihuman.config import load_settings
    from digihuman.engines.asr import create_asr
    from digihuman.media.audio import load_audio

    settings = load_settings()
    audio = load_audio(file, max_seconds=settings.api.max_audio_seconds)  # as the API
    asr = create_asr(settings.asr, engine)
    result = asr.transcribe(audio, language=language or settings.asr.language)
    if as_json:
        typer.echo(json.dumps(asdict(result), ensure_ascii=False, indent=2))
    else:
        typer.echo(result.text)
