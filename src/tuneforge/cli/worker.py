"""`tuneforge worker`: one standalone training worker (claims jobs from the database's queue)."""

from __future__ import annotations

from typing import Annotated

import typer

from tuneforge.cli import app
from tuneforge.cli.options import DataDir, load_settings
from tuneforge.logs import configure as configure_logging


@app.command()
def worker(
    data_dir: DataDir = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Trainings this worker runs at once. Env: TUNEFORGE_WORKER_CONCURRENCY.", show_default="1"
        ),
    ] = None,
) -> None:
    """Run a training worker (validates files, trains queued jobs, recovers orphaned jobs).

    Any number of workers may share one database (SQLite locally, or PostgreSQL)."""
    import signal
    import threading

    from tuneforge.jobs.worker import Worker

    settings = load_settings(data_dir, worker_concurrency=concurrency)
    configure_logging(settings.log_level, process="worker")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    Worker(settings).run(stop)
