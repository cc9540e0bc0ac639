"""The ``digihuman`` command line: render | avatar | demo | tts | asr | models | serve | worker.

Each command group lives in its own module and registers itself on :data:`app`; modules import
heavy dependencies inside the command functions so that ``digihuman --help`` stays instant.
Every :class:`~digihuman.errors.DigihumanError` becomes one line on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from digihuman.errors import DigihumanError

app = typer.Typer(
    name="digihuman",
    help="Self-hosted digital human: portrait + speech → lip-synced video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# command modules, each owning its commands; order is the order in --help
_COMMAND_MODULES = ("render", "speech", "models", "service", "web")

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"digihuman.cli.{_name}")
    except ModuleNotFoundError as exc:  # a module not written yet, or its extra missing
        if exc.name != f"digihuman.cli.{_name}":
            raise


def main() -> None:
    """Console entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except DigihumanError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
