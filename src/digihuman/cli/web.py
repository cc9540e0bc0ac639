"""``digihuman web``: the demo page (Gradio) on port 7860, a client of the API."""

from __future__ import annotations

import typer

from digihuman.cli import app


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", help="the page's address"),
    port: int = typer.Option(7860, help="the page's port"),
    api: str | None = typer.Option(
        None, help="the API's URL (default: settings api.host/api.port)"
    ),
) -> None:
    """The demo page: a tab per capability, every action a call to the API."""
    from digihuman.config import load_settings
    from digihuman.jobs.supervisor import watch_parent

    watch_parent()  # started by serve --web: stop when serve is gone
    settings = load_settings()
    url = api or f"http://{settings.api.host}:{settings.api.port}"
    key = settings.api.api_key.get_secret_value() if settings.api.api_key else None
    try:
        from digihuman.web.app import serve
    except ImportError as exc:  # the web extra is missing
        from digihuman.errors import MissingDependencyError

        raise MissingDependencyError(
            f"the demo page needs gradio ({exc}); install the web extra: pip install -e '.[web]'"
        ) from exc
    typer.echo(f"demo page on http://{host}:{port} (API {url})")
    serve(url, host=host, port=port, api_key=key)
