"""``digihuman serve``, ``digihuman api`` and ``digihuman worker KIND``."""

from __future__ import annotations

import typer

from digihuman.cli import app

KIND_HELP = "job kind: tts | asr | bqfk | render | stream | answer (debug: a diagnostic no-op kind)"


@app.command()
def serve(
    host: str | None = typer.Option(None, help="API address (default: settings, 127.0.0.1)"),
    port: int | None = typer.Option(None, help="API port (default: settings, 8181)"),
    kinds: str | None = typer.Option(
        None, help="comma-separated worker kinds to start (default: all)"
    ),
    no_workers: bool = typer.Option(False, "--no-workers", help="start the API only"),
    web: bool = typer.Option(False, "--web", help="also the demo page (digihuman web, 7860)"),
) -> None:
    """The API, one worker per job kind (and an embedded Redis when needed), supervised.

    Every child stops when ``serve`` stops, also when it is killed. When no Redis answers at a
    loopback URL an embedded one is started and supervised like the others; a remote URL that
    does not answer is an error (one line, exit status 2).
    """
    import signal
    import sys

    from digihuman.config import load_settings
    from digihuman.errors import DigihumanError
    from digihuman.jobs.supervisor import (
        Child,
        Supervisor,
        child_env,
        embedded_redis_child,
        is_loopback_url,
        redacted_url,
        redis_reachable,
        unreachable_message,
    )
    from digihuman.observability import setup_logging
    from digihuman.storage import DataRoot

    settings = load_settings()
    setup_logging(settings.log_level)
    root = DataRoot(settings.data_dir).ensure()
    children: list[Child] = []
    url = None
    if not redis_reachable(settings.redis):
        if not (settings.redis.embedded and is_loopback_url(settings.redis.url)):
            raise DigihumanError(unreachable_message(settings.redis))
        redis_child, url = embedded_redis_child(settings.redis, root.root / "redis")
        children.append(redis_child)
        typer.echo(
            f"starting an embedded Redis at {redacted_url(url)} (data under {root.root / 'redis'})"
        )
    env = child_env(url)
    py = [sys.executable, "-m", "digihuman"]
    api_argv = [*py, "api"]
    if host:
        api_argv += ["--host", host]
    if port:
        api_argv += ["--port", str(port)]
    children.append(Child("api", api_argv, env))
    if not no_workers:
        wanted = kinds.split(",") if kinds else list(settings.jobs.kinds)
        for kind in wanted:
            children.append(Child(f"worker-{kind}", [*py, "worker", kind.strip()], env))
    if web:  # the demo page, a client of this API
        api_url = f"http://{host or settings.api.host}:{port or settings.api.port}"
        children.append(Child("web", [*py, "web", "--api", api_url], env))
    sup = Supervisor(children, grace_s=settings.jobs.shutdown_grace_s + 5)

    def _stop(signum: int, frame: object) -> None:
        if sup.stopping.is_set():
            typer.echo("stopping now: 1 s more, then SIGKILL", err=True)
        sup.stop()

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _stop)
    h = host or settings.api.host
    p = port or settings.api.port
    typer.echo(f"serving on http://{h}:{p} (docs at /docs); Ctrl-C stops everything")
    sup.run()  # from the main thread: children are told to stop when the thread that forked dies


@app.command("api")
def api_cmd(
    host: str | None = typer.Option(None, help="address (default: settings, 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default: settings, 8181)"),
) -> None:
    """The HTTP API alone (uvicorn)."""
    import uvicorn

    from digihuman.config import load_settings
    from digihuman.jobs.supervisor import watch_parent

    watch_parent()  # started by serve without PR_SET_PDEATHSIG: stop when serve is gone
    settings = load_settings()
    uvicorn.run(
        "digihuman.api.app:app_from_env",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=settings.api.workers if settings.api.workers > 1 else None,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command()
def worker(
    kind: str = typer.Argument(..., help=KIND_HELP),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, max=64, help="jobs at once"),
    metrics_port: int | None = typer.Option(None, help="expose Prometheus metrics on this port"),
) -> None:
    """Serve jobs of one kind: load the engine once, take jobs until SIGTERM."""
    import signal
    import threading

    from digihuman.config import load_settings
    from digihuman.jobs.handlers import make_handler
    from digihuman.jobs.queue import Keys, sync_client
    from digihuman.jobs.supervisor import watch_parent
    from digihuman.jobs.worker import Worker
    from digihuman.observability import setup_logging
    from digihuman.storage import DataRoot

    watch_parent()  # started by serve without PR_SET_PDEATHSIG: stop when serve is gone
    settings = load_settings()
    setup_logging(settings.log_level)
    handler = make_handler(kind, settings)  # loads the engine once
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    cfg = settings.jobs
    client = sync_client(
        settings.redis, socket_timeout=cfg.block_ms / 1000 + settings.redis.socket_timeout_s
    )
    w = Worker(
        client,
        Keys(settings.redis.key_prefix),
        kind,
        handler,
        data_root=DataRoot(settings.data_dir).ensure(),
        settings=cfg,
        concurrency=concurrency,
    )
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    w.start()
    while not stop.wait(0.5):
        pass
    w.stop()
    # Everything this worker owned is finished or handed back: leave without interpreter
    # finalisation, which can wait on daemon job threads still blocked in a handler or a
    # Redis read (seen once: a worker resumed from SIGSTOP outlived its SIGTERM by > 20 s).
    import logging
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
