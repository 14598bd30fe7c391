"""`tuneforge webhooks add|list|remove|deliveries`: job-finished webhooks (works without a server)."""

from __future__ import annotations

from typing import Annotated

import typer

from tuneforge.cli import app
from tuneforge.cli.client import AsJson, print_list, print_table
from tuneforge.cli.keys import open_sessionmaker
from tuneforge.cli.options import DataDir

webhooks_app = typer.Typer(
    help="Webhooks sent when a fine-tuning job succeeds, fails or is "
    "cancelled (signed per Standard Webhooks).",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Option(help="The endpoint that receives POSTs.")],
    project: Annotated[
        str | None, typer.Option(help="Only this project's jobs (default: every project).")
    ] = None,
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--events",
            help="Event types (repeat or comma-separate); default: all of "
            "fine_tuning.job.succeeded, .failed, .cancelled.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Register an endpoint and print its signing secret (whsec_…) as the last line."""
    from tuneforge.errors import TuneforgeError
    from tuneforge.services.webhooks import add_endpoint
    from tuneforge.store.db import transaction

    chosen = [e.strip() for item in (events or []) for e in item.split(",") if e.strip()]
    try:
        with transaction(open_sessionmaker(data_dir)) as session:
            endpoint = add_endpoint(session, url, project=project, events=chosen or None)
            endpoint_id, secret, kinds = endpoint.id, endpoint.secret, list(endpoint.events)
    except TuneforgeError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"Added webhook endpoint {endpoint_id} -> {url} for "
        f"{'project ' + repr(project) if project else 'every project'} "
        f"({', '.join(kinds)}). Its signing secret:"
    )
    typer.echo(secret)


@webhooks_app.command("list")
def list_(as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """List endpoints (secrets are not shown)."""
    from tuneforge.services.webhooks import list_endpoints
    from tuneforge.store.db import transaction

    columns = ("id", "project", "url", "events")
    with transaction(open_sessionmaker(data_dir)) as session:
        rows = [(e.id, name or "*", e.url, ",".join(e.events)) for e, name in list_endpoints(session)]
    if not print_list([dict(zip(columns, row)) for row in rows], as_json):
        print_table(columns, rows, keep=("id", "url"))


@webhooks_app.command("remove")
def remove(
    endpoint_id: Annotated[str, typer.Argument(help="The endpoint id (we_…).")], data_dir: DataDir = None
) -> None:
    """Remove an endpoint; its pending deliveries are dropped."""
    from tuneforge.errors import NotFound
    from tuneforge.services.webhooks import remove_endpoint
    from tuneforge.store.db import transaction

    try:
        with transaction(open_sessionmaker(data_dir)) as session:
            remove_endpoint(session, endpoint_id)
    except NotFound as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Removed {endpoint_id}.")


@webhooks_app.command("deliveries")
def deliveries(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """The delivery log: webhooks and e-mails with attempts and last status."""
    from tuneforge.services.webhooks import deliveries as newest
    from tuneforge.store.db import transaction

    with transaction(open_sessionmaker(data_dir)) as session:
        rows = [
            (d.id, d.kind, d.event_type, d.job_id, d.target, d.status, str(d.attempts), d.last_status or "")
            for d in newest(session, limit)
        ]
    columns = ("id", "kind", "event", "job", "target", "status", "attempts", "last")
    if not print_list([dict(zip(columns, row)) for row in rows], as_json):
        print_table(columns, rows, keep=("id", "job"))
