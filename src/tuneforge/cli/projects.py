"""`tuneforge projects list|set`: per-project operator settings (notification e-mail, screening)."""

from __future__ import annotations

from typing import Annotated

import typer

from tuneforge.cli import app
from tuneforge.cli.client import AsJson, print_list, print_table
from tuneforge.cli.keys import open_sessionmaker
from tuneforge.cli.options import DataDir

projects_app = typer.Typer(help="Projects and their operator settings.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")


@projects_app.command("list")
def list_(as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """Every project with its settings."""
    from tuneforge.services.projects import list_projects
    from tuneforge.store.db import transaction

    columns = ("project", "id", "notify_email", "screening")
    with transaction(open_sessionmaker(data_dir)) as session:
        rows = [
            (
                p.name,
                p.id,
                (p.settings or {}).get("notify_email") or "",
                "off" if (p.settings or {}).get("screening") is False else "on",
            )
            for p in list_projects(session)
        ]
    if not print_list([dict(zip(columns, row)) for row in rows], as_json):
        print_table(columns, rows, keep=("project", "id"))


@projects_app.command("set")
def set_(
    project: Annotated[str, typer.Argument(help="Project name (created if new).")],
    notify_email: Annotated[
        str | None,
        typer.Option(help="E-mail a message here when a job finishes (needs TUNEFORGE_SMTP_HOST)."),
    ] = None,
    no_notify_email: Annotated[bool, typer.Option("--no-notify-email", help="Stop e-mailing.")] = False,
    screening: Annotated[
        bool | None, typer.Option("--screening/--no-screening", help="Screen this project's training data.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Change a project's settings."""
    from tuneforge.errors import TuneforgeError
    from tuneforge.services.projects import update_settings
    from tuneforge.store.db import transaction

    changes: dict = {}
    if no_notify_email:
        changes["notify_email"] = None
    elif notify_email is not None:
        changes["notify_email"] = notify_email
    if screening is not None:
        changes["screening"] = screening
    try:
        with transaction(open_sessionmaker(data_dir)) as session:
            settings = dict(update_settings(session, project, **changes).settings)
    except TuneforgeError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"Project {project!r}: notify_email={settings.get('notify_email') or '-'}, "
        f"screening={'off' if settings.get('screening') is False else 'on'}"
    )
