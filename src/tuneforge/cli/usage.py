"""`tuneforge usage [--since] [--until] [--by]`: trained and served tokens and cost per project and
model, read from the database (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from tuneforge.cli import app
from tuneforge.cli.keys import open_sessionmaker
from tuneforge.cli.options import DataDir, load_settings


def _when(value: str | None) -> int | None:
    """Unix seconds, or an ISO date/datetime (UTC unless it says otherwise)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: expected YYYY-MM-DD[THH:MM[:SS]] or Unix seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


@app.command()
def usage(
    since: Annotated[
        str | None,
        typer.Option(
            help="Start (inclusive): YYYY-MM-DD, ISO datetime or Unix seconds. Default: 30 days ago."
        ),
    ] = None,
    until: Annotated[str | None, typer.Option(help="End (exclusive). Default: now.")] = None,
    by: Annotated[str, typer.Option(help="project | model | project_model")] = "project_model",
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Tokens trained and served, and what they cost (Settings.prices), for a period."""
    import json

    from sqlalchemy import select

    from tuneforge.errors import TuneforgeError
    from tuneforge.services.usage import report
    from tuneforge.store.tables import Project

    settings = load_settings(data_dir)
    factory = open_sessionmaker(data_dir)
    try:
        with factory() as session:
            project_id = None
            if project is not None:
                project_id = session.scalar(select(Project.id).where(Project.name == project))
                if project_id is None:
                    raise typer.BadParameter(f"no project named {project!r}")
            result = report(
                session,
                settings,
                start_time=_when(since),
                end_time=_when(until),
                group_by=by,
                project_id=project_id,
            )
    except TuneforgeError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    fields = (
        "project",
        "model",
        "jobs",
        "trained_tokens",
        "training_cost",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "inference_cost",
    )
    rows = [{f: getattr(line, f) for f in fields} | {"total_cost": line.total_cost} for line in result.lines]
    totals = {f: getattr(result.totals, f) for f in fields[2:]} | {"total_cost": result.totals.total_cost}
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "start_time": result.start_time,
                    "end_time": result.end_time,
                    "group_by": result.group_by,
                    "data": rows,
                    "totals": totals,
                }
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    def iso(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    table = Table(title=f"Usage {iso(result.start_time)} → {iso(result.end_time)}")
    for name in (
        "project",
        "model",
        "jobs",
        "trained tokens",
        "training $",
        "requests",
        "prompt tokens",
        "completion tokens",
        "inference $",
        "total $",
    ):
        table.add_column(name, justify="left" if name in ("project", "model") else "right")
    for r in rows + [{"project": "TOTAL", "model": "", **totals}]:
        table.add_row(
            r["project"] or "",
            r["model"] or "",
            str(r["jobs"]),
            str(r["trained_tokens"]),
            f"{r['training_cost']:.6f}",
            str(r["requests"]),
            str(r["prompt_tokens"]),
            str(r["completion_tokens"]),
            f"{r['inference_cost']:.6f}",
            f"{r['total_cost']:.6f}",
        )
    Console(width=200).print(table)
