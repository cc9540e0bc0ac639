"""``digihuman render``, ``digihuman avatar ...`` and ``digihuman demo``."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from digihuman.cli import app
from digihuman.errors import InputError

if TYPE_CHECKING:
    from digihuman.config import Settings
    from digihuman.engines.base import Progress

avatar_app = typer.Typer(
    help="Prepare and list cached avatars (realtime mode).", no_args_is_help=True
)
app.add_typer(avatar_app, name="avatar")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_TEXT = (
    "Hello! I am a digital human. I speak from a single photo, on your own computer, "
    "with nothing downloaded."
)


def _settings(**lipsync: Any) -> Settings:
    from digihuman.config import load_settings
    from digihuman.storage import DataRoot

    settings = load_settings()
    for key, value in lipsync.items():
        if value is not None:
            setattr(settings.lipsync, key, value)
    DataRoot(settings.data_dir).ensure()
    return settings


@contextmanager
def _progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A terminal progress bar fed by the library's progress callbacks."""
    if not enabled or not sys.stderr.isatty():
        yield lambda fraction, message: None
        return
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[msg]}"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}
        current = {"phase": "working"}

        def update(fraction: float, message: str) -> None:
            phase = current["phase"]
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=1.0, msg="")
            bar.update(tasks[phase], completed=fraction, msg=message)

        def set_phase(name: str) -> Progress:
            def cb(fraction: float, message: str) -> None:
                current["phase"] = name
                update(fraction, message)

            return cb

        update.phase = set_phase  # type: ignore[attr-defined]  # a small helper hung on the cb
        yield update


def _phase(progress: Progress, name: str) -> Progress:
    maker = getattr(progress, "phase", None)
    return maker(name) if maker else progress


def _text_stream(settings: Settings, text: str, voice: str | None, language: str | None) -> Any:
    try:
        from digihuman.engines.tts import create_tts, speech_stream
    except ImportError as exc:
        raise InputError(
            f"text-to-speech is not available ({exc}); install the 'speech' extra"
        ) from None
    if voice:
        settings.tts.voice = voice
    engine = create_tts(settings.tts)
    return speech_stream(engine, text, voice=voice, language=language)


def run_render(
    settings: Settings,
    *,
    avatar: Path | None,
    avatar_id: str | None,
    audio: Path | None,
    text: str | None,
    output: Path | None,
    save_frames: bool,
    voice: str | None = None,
    language: str | None = None,
    progress: Progress | None = None,
) -> Path:
    from digihuman.avatar.prepare import obtain
    from digihuman.avatar.store import AvatarStore
    from digihuman.media.audio import load_audio
    from digihuman.pipeline.engines import create_lipsync
    from digihuman.pipeline.render import default_output_name, render
    from digihuman.storage import DataRoot

    progress = progress or (lambda f, m: None)
    if (audio is None) == (text is None):
        raise InputError("give exactly one of --audio FILE or --text '...'")
    if avatar is None and avatar_id is None:
        raise InputError("give --avatar IMAGE_OR_VIDEO or --avatar-id NAME")
    if output is not None and output.suffix.lower() != ".mp4":
        raise InputError(f"output must be an .mp4 file, got {output.name}")
    root = DataRoot(settings.data_dir).ensure()
    store = AvatarStore(root.avatars)

    # read the audio first: a bad audio file must fail before minutes of preparation; the
    # API's length limit holds here too (a small compressed file can decode to hours)
    audio_input: Any
    if audio is not None:
        audio_input = load_audio(audio, max_seconds=settings.api.max_audio_seconds)
        audio_name = audio.name
    else:
        assert text is not None
        if not text.strip():
            raise InputError("--text is empty; give a sentence to speak")
        audio_input = _text_stream(settings, text, voice, language)
        audio_name = "tts-" + hashlib.sha256(text.encode()).hexdigest()[:8]

    engine = create_lipsync(settings)
    prepared, reasons = obtain(
        store,
        engine,
        source=avatar,
        avatar_id=avatar_id,
        fps=engine.capabilities.fps,
        progress=_phase(progress, "prepare"),
    )
    if reasons:
        typer.echo(f"avatar {avatar_id} was stale ({'; '.join(reasons)}); re-prepared", err=True)
    input_name = avatar_id or (avatar.name if avatar else "avatar")

    if output is None:
        output = root.output / f"{default_output_name(input_name, audio_name)}.mp4"
    result = render(
        engine,
        prepared,
        audio_input,
        output,
        save_frames=save_frames,
        progress=_phase(progress, "render"),
    )
    return result.output


@app.command("render")
def render_cmd(
    avatar: Path | None = typer.Option(
        None, "--avatar", help="Portrait image, image folder or video."
    ),
    avatar_id: str | None = typer.Option(None, "--avatar-id", help="A prepared avatar's id."),
    audio: Path | None = typer.Option(None, "--audio", help="Speech: wav/mp3/m4a/ogg/flac/mp4."),
    text: str | None = typer.Option(
        None, "--text", help="Speak this text (TTS) instead of --audio."
    ),
    engine: str | None = typer.Option(None, "--engine", help="Lip-sync engine: lite | musetalk."),
    fps: float | None = typer.Option(None, "--fps", help="Output frame rate (default 25)."),
    face_index: int | None = typer.Option(None, "--face-index", help="Which face (0 = largest)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output .mp4 path."),
    save_frames: bool = typer.Option(False, "--save-frames", help="Also write PNG frames."),
    voice: str | None = typer.Option(None, "--voice", help="TTS voice (with --text)."),
    language: str | None = typer.Option(None, "--language", help="TTS language: en | zh."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Render a lip-synced MP4 from a portrait (or video) and speech."""
    settings = _settings(engine=engine, fps=fps, face_index=face_index)
    with _progress_bar(not quiet) as progress:
        out = run_render(
            settings,
            avatar=avatar,
            avatar_id=avatar_id,
            audio=audio,
            text=text,
            output=output,
            save_frames=save_frames,
            voice=voice,
            language=language,
            progress=progress,
        )
    typer.echo(str(out))


@avatar_app.command("prepare")
def avatar_prepare(
    avatar_id: str = typer.Option(..., "--id", help="Name to store the avatar under."),
    source: Path = typer.Option(..., "--source", help="Portrait image, image folder or video."),
    engine: str | None = typer.Option(None, "--engine", help="Lip-sync engine: lite | musetalk."),
    face_index: int | None = typer.Option(None, "--face-index", help="Which face (0 = largest)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Prepare an avatar once (faces, landmarks, masks...) for fast renders and live use."""
    from digihuman.avatar.prepare import prepare_and_store
    from digihuman.avatar.store import AvatarStore
    from digihuman.pipeline.engines import create_lipsync
    from digihuman.storage import DataRoot

    settings = _settings(engine=engine, face_index=face_index)
    store = AvatarStore(DataRoot(settings.data_dir).avatars)
    eng = create_lipsync(settings)
    with _progress_bar(not quiet) as progress:
        prepared = prepare_and_store(
            store,
            avatar_id,
            eng,
            source,
            fps=eng.capabilities.fps,
            progress=_phase(progress, "prepare"),
        )
    typer.echo(
        f"prepared {avatar_id}: {prepared.n_frames} frame(s) at "
        f"{prepared.size[0]}x{prepared.size[1]}"
    )
    typer.echo(str(store.path(avatar_id)))


@avatar_app.command("list")
def avatar_list() -> None:
    """List prepared avatars."""
    from digihuman.avatar.store import AvatarStore
    from digihuman.storage import DataRoot

    settings = _settings()
    for info in AvatarStore(DataRoot(settings.data_dir).avatars).list_avatars():
        m = info.manifest
        typer.echo(
            f"{info.avatar_id}\t{m['engine']}\t{m['n_frames']} frames\t{m['width']}x{m['height']}"
        )


@app.command("demo")
def demo_cmd(
    clip: bool = typer.Option(
        False, "--clip", help="Use the bundled speech clip instead of speaking text with TTS."
    ),
    text: str = typer.Option(DEMO_TEXT, "--text", help="What the demo says."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Render the bundled public-domain portrait speaking, offline; prints the output path."""
    settings = _settings()
    use_tts = not clip
    if use_tts:
        try:
            import digihuman.engines.tts  # noqa: F401  # probe: the speech extra and engines
        except ImportError:
            use_tts = False
    with _progress_bar(not quiet) as progress:
        out = run_render(
            settings,
            avatar=ASSETS / "portrait.jpg",
            avatar_id=None,
            audio=None if use_tts else ASSETS / "speech_en.wav",
            text=text if use_tts else None,
            output=None,
            save_frames=False,
            progress=progress,
        )
    typer.echo(str(out))
