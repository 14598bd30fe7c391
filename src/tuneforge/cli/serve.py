"""`tuneforge serve`: the API server (uvicorn, run in-process so lifespan and signals work)."""

from __future__ import annotations

from typing import Annotated

import typer

from tuneforge.cli import app
from tuneforge.cli.options import DataDir, load_settings
from tuneforge.config import Settings


def configure_logging(level: str) -> None:
    from tuneforge.logs import configure

    configure(level, process="server")


def ensure_admin_key(settings: Settings) -> str | None:
    """On a first start (no keys at all) create project `default` with an admin key; return it."""
    from tuneforge.services.keys import any_keys, create_key
    from tuneforge.store.db import make_engine, make_sessionmaker, migrate, transaction

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with transaction(make_sessionmaker(engine)) as session:
            if any_keys(session):
                return None
            return create_key(session, "default", admin=True, name="first-start admin")[1]
    finally:
        engine.dispose()


def run_server(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (in-flight requests finish).

    Worker processes (`settings.workers`) are started and stopped around `server.run()`.
    """
    import uvicorn

    from tuneforge.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    from tuneforge.jobs.worker import WorkerProcesses

    workers = WorkerProcesses(settings, settings.workers)
    try:
        uvicorn.Server(config).run()
    finally:
        workers.stop()  # each saves its running trainings and re-queues them


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind. Env: TUNEFORGE_HOST.", show_default="127.0.0.1")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port. Env: TUNEFORGE_PORT.", show_default="8000")] = None,
    data_dir: DataDir = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Training worker processes to start (0 = none). Env: TUNEFORGE_WORKERS.", show_default="1"
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible API server (base URL http://HOST:PORT/v1)."""
    settings = load_settings(data_dir, host=host, port=port, workers=workers)
    configure_logging(settings.log_level)
    secret = ensure_admin_key(settings)
    if secret is not None:
        typer.echo("First start: created project 'default' with an admin API key (shown once):")
        typer.echo(f"    {secret}")
        typer.echo("More keys: tuneforge keys create --project NAME")
    root = f"http://{settings.host}:{settings.port}"
    typer.echo(f"tuneforge: API {root}/v1, dashboard {root}/ui (data: {settings.data_dir})", err=True)
    run_server(settings)
