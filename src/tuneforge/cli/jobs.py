"""`tuneforge jobs …`: drive a running server's fine-tuning jobs API with the openai SDK.

Base URL and key: --base-url / --api-key, else OPENAI_BASE_URL / OPENAI_API_KEY, else
TUNEFORGE_BASE_URL / TUNEFORGE_API_KEY, else http://127.0.0.1:8000/v1.
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import typer

from tuneforge.cli import app
from tuneforge.training import hparams

jobs_app = typer.Typer(help="Create, inspect and control fine-tuning jobs on a running server.",
                       no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

BaseUrl = Annotated[str | None, typer.Option("--base-url", help="Server base URL ending in /v1. "
                                             "Env: OPENAI_BASE_URL or TUNEFORGE_BASE_URL.")]
ApiKey = Annotated[str | None, typer.Option("--api-key", help="API key. Env: OPENAI_API_KEY or "
                                            "TUNEFORGE_API_KEY.")]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _client(base_url: str | None, api_key: str | None):
    from openai import OpenAI

    url = (base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("TUNEFORGE_BASE_URL")
           or "http://127.0.0.1:8000/v1")
    key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("TUNEFORGE_API_KEY")
    if not key:
        raise typer.BadParameter("no API key: pass --api-key or set OPENAI_API_KEY",
                                 param_hint="--api-key")
    return OpenAI(base_url=url, api_key=key, max_retries=2)


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj.model_dump() if hasattr(obj, "model_dump") else obj, indent=2))


def _call(fn, *args, **kwargs):
    """Run an SDK call; an API error becomes a one-line message and exit code 1."""
    import openai

    try:
        return fn(*args, **kwargs)
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        typer.echo(f"error {exc.status_code}: {body.get('message', exc.message)}", err=True)
        raise typer.Exit(1) from None
    except openai.APIConnectionError as exc:
        typer.echo(f"error: cannot reach the server: {exc}", err=True)
        raise typer.Exit(1) from None


def _hp_help(d: hparams.Hyperparameter) -> str:
    return f"'auto' or {d.expected}. {d.help}"


@jobs_app.command("create")
def create(
    model: Annotated[str, typer.Option(help="Base model, alias, or an ft: model to continue")],
    training_file: Annotated[str, typer.Option(help="File id (purpose fine-tune)")],
    validation_file: Annotated[str | None, typer.Option()] = None,
    n_epochs: Annotated[str | None, typer.Option(help=_hp_help(hparams.N_EPOCHS))] = None,
    batch_size: Annotated[str | None, typer.Option(help=_hp_help(hparams.BATCH_SIZE))] = None,
    learning_rate_multiplier: Annotated[str | None, typer.Option(
        help=_hp_help(hparams.LEARNING_RATE_MULTIPLIER))] = None,
    suffix: Annotated[str | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
    follow_job: Annotated[bool, typer.Option("--follow", help="Then follow it live")] = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a fine-tuning job (method supervised) and print it."""
    given = {"n_epochs": n_epochs, "batch_size": batch_size,
             "learning_rate_multiplier": learning_rate_multiplier}
    hp = {d.name: "auto" if given[d.name] == "auto" else d.type(given[d.name])
          for d in hparams.definitions("supervised") if given.get(d.name) is not None}
    body: dict[str, Any] = {"model": model, "training_file": training_file,
                            "method": {"type": "supervised",
                                       "supervised": {"hyperparameters": hp}}}
    for key, value in (("validation_file", validation_file), ("suffix", suffix), ("seed", seed)):
        if value is not None:
            body[key] = value
    if metadata:
        body["metadata"] = dict(item.split("=", 1) for item in metadata)
    client = _client(base_url, api_key)
    job = _call(client.fine_tuning.jobs.create, **body)
    _print(job)
    if follow_job:
        _follow(client, job.id)


@jobs_app.command("list")
def list_(limit: Annotated[int, typer.Option()] = 20, base_url: BaseUrl = None,
          api_key: ApiKey = None) -> None:
    """List jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    page = _call(_client(base_url, api_key).fine_tuning.jobs.list, limit=limit)
    table = Table("id", "status", "model", "fine_tuned_model", "created_at")
    for job in page.data:
        table.add_row(job.id, job.status, job.model, job.fine_tuned_model or "",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at)))
    Console().print(table)


@jobs_app.command("get")
def get(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Print one job."""
    _print(_call(_client(base_url, api_key).fine_tuning.jobs.retrieve, job_id))


@jobs_app.command("cancel")
def cancel(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Cancel a job (a running one stops within seconds)."""
    _print(_call(_client(base_url, api_key).fine_tuning.jobs.cancel, job_id))


@jobs_app.command("pause")
def pause(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Pause a running job (it saves its full state, then shows status paused)."""
    _print(_call(_client(base_url, api_key).fine_tuning.jobs.pause, job_id))


@jobs_app.command("resume")
def resume(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Resume a paused job (queued again; it continues from its saved state)."""
    _print(_call(_client(base_url, api_key).fine_tuning.jobs.resume, job_id))


@jobs_app.command("follow")
def follow(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Show a job live: its events, and a progress bar with loss and ETA, until it ends."""
    _follow(_client(base_url, api_key), job_id)


def _follow(client, job_id: str, poll: float = 1.0) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    seen: set[str] = set()
    with Progress(TextColumn("[bold]{task.fields[status]}"), BarColumn(),
                  TextColumn("step {task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task("train", total=None, status="…", loss="-")
        while True:
            job = _call(client.fine_tuning.jobs.retrieve, job_id)
            # Newest first from the API: collect unseen events, then show them oldest first.
            fresh = []
            for event in _call(client.fine_tuning.jobs.list_events, job_id, limit=100):
                if event.id in seen:
                    break
                fresh.append(event)
            for event in reversed(fresh):
                seen.add(event.id)
                if event.type == "metrics" and event.data:
                    progress.update(task, total=event.data.get("total_steps"),
                                    completed=event.data.get("step", 0),
                                    loss=f"{event.data.get('train_loss', 0):.4f}")
                else:
                    style = {"error": "red", "warn": "yellow"}.get(event.level, "")
                    progress.console.print(f"[{style}]{event.message}[/{style}]" if style
                                           else event.message)
            progress.update(task, status=job.status)
            if job.status in TERMINAL or job.status == "paused":
                break
            time.sleep(poll)
    if job.status == "succeeded":
        console.print(f"fine_tuned_model: [bold]{job.fine_tuned_model}[/bold]")
    elif job.status == "failed" and job.error:
        console.print(f"[red]failed: {job.error.code}: {job.error.message}[/red]")
        raise typer.Exit(1)
