"""`tuneforge jobs …`: drive a running server's fine-tuning jobs API with the openai SDK
(connection options and output helpers: `cli/client.py`)."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from tuneforge.cli import app
from tuneforge.cli.client import (
    ApiKey,
    AsJson,
    BaseUrl,
    call,
    make_client,
    print_json,
    print_list,
    print_table,
    when,
)
from tuneforge.training import hparams

jobs_app = typer.Typer(
    help="Create, inspect and control fine-tuning jobs on a running server.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")

TERMINAL = {"succeeded", "failed", "cancelled"}


def _hp_help(d: hparams.Hyperparameter) -> str:
    return f"'auto' or {d.expected}. {d.help}"


def _hyperparameter_options(command: Callable[..., None]) -> Callable[..., None]:
    """Adds one `--NAME` option per hyperparameter of any method (training/hparams.py: a new one
    there is a new option here) and hands those given to `command` as `hyperparameters`."""
    defs = hparams.all_definitions()

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        given: dict[str, Any] = {}
        for d in defs:
            value = kwargs.pop(d.name)
            if value is None:
                continue
            try:
                given[d.name] = hparams.AUTO if value == hparams.AUTO else d.type(value)
            except ValueError:
                raise typer.BadParameter(
                    f"{value!r}: expected 'auto' or {d.expected}", param_hint=f"--{d.name.replace('_', '-')}"
                ) from None
        command(**kwargs, hyperparameters=given)

    sig = inspect.signature(command, eval_str=True)
    options = [
        inspect.Parameter(
            d.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None, typer.Option(help=_hp_help(d), rich_help_panel="Hyperparameters")
            ],
        )
        for d in defs
    ]
    params = [p for p in sig.parameters.values() if p.name != "hyperparameters"]
    # keyword-only: after the others in the signature, shown after them in --help
    wrapper.__signature__ = sig.replace(parameters=params + options)  # type: ignore[attr-defined]
    return wrapper


@jobs_app.command("create")
@_hyperparameter_options
def create(
    model: Annotated[str, typer.Option(help="Base model, alias, or an ft: model to continue")],
    training_file: Annotated[str, typer.Option(help="File id (purpose fine-tune)")],
    method: Annotated[
        str,
        typer.Option(
            help=f"{' or '.join(hparams.METHODS)}: dpo trains on preference pairs "
            "(input, preferred_output, non_preferred_output)"
        ),
    ] = "supervised",
    validation_file: Annotated[str | None, typer.Option()] = None,
    suffix: Annotated[str | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
    follow_job: Annotated[bool, typer.Option("--follow", help="Then follow it live")] = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    *,
    hyperparameters: dict[str, Any],
) -> None:
    """Create a fine-tuning job and print it. Hyperparameters not given are 'auto'; one that
    the method does not take is the server's 400."""
    if method not in hparams.METHODS:
        raise typer.BadParameter(
            f"{method!r}: expected {' or '.join(hparams.METHODS)}", param_hint="--method"
        )
    body: dict[str, Any] = {
        "model": model,
        "training_file": training_file,
        "method": hparams.method_object(method, hyperparameters),
    }
    for key, value in (("validation_file", validation_file), ("suffix", suffix), ("seed", seed)):
        if value is not None:
            body[key] = value
    if metadata:
        body["metadata"] = dict(item.split("=", 1) for item in metadata)
    client = make_client(base_url, api_key)
    job = call(client.fine_tuning.jobs.create, **body)
    if follow_job:  # the events say the rest; the full object is one `jobs get` away
        typer.echo(f"Created {job.id} ({job.status}); following it (Ctrl-C stops following, not the job).")
        _follow(client, job.id)
    else:
        print_json(job)


@jobs_app.command("list")
def list_(
    limit: Annotated[int, typer.Option()] = 20,
    as_json: AsJson = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """List jobs, newest first."""
    page = call(make_client(base_url, api_key).fine_tuning.jobs.list, limit=limit)
    if print_list(page.data, as_json):
        return
    print_table(
        ("id", "status", "model", "fine_tuned_model", "created_at"),
        [(j.id, j.status, j.model, j.fine_tuned_model, when(j.created_at)) for j in page.data],
        keep=("id", "fine_tuned_model"),
    )


@jobs_app.command("get")
def get(job_id: str, as_json: AsJson = False, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Print one job (indented JSON; --json: one line)."""
    print_json(call(make_client(base_url, api_key).fine_tuning.jobs.retrieve, job_id), compact=as_json)


@jobs_app.command("events")
def events(
    job_id: str,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: AsJson = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A job's events, newest first (as the API lists them)."""
    page = call(make_client(base_url, api_key).fine_tuning.jobs.list_events, job_id, limit=limit)
    if print_list(page.data, as_json):
        return
    print_table(
        ("id", "created_at", "level", "message"),
        [(e.id, when(e.created_at), e.level, e.message) for e in page.data],
    )


@jobs_app.command("cancel")
def cancel(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Cancel a job (a running one stops within seconds)."""
    print_json(call(make_client(base_url, api_key).fine_tuning.jobs.cancel, job_id))


@jobs_app.command("pause")
def pause(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Pause a running job (it saves its full state, then shows status paused)."""
    print_json(call(make_client(base_url, api_key).fine_tuning.jobs.pause, job_id))


@jobs_app.command("resume")
def resume(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Resume a paused job (queued again; it continues from its saved state)."""
    print_json(call(make_client(base_url, api_key).fine_tuning.jobs.resume, job_id))


@jobs_app.command("follow")
def follow(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Show a job live: its events, and a progress bar with loss and ETA, until it ends."""
    _follow(make_client(base_url, api_key), job_id)


def _follow(client, job_id: str, poll: float = 1.0) -> None:
    try:
        _follow_until_done(client, job_id, poll)
    except KeyboardInterrupt:
        typer.echo(f"\nStopped following; the job goes on (tuneforge jobs follow {job_id}).", err=True)
        raise typer.Exit(130) from None


def _follow_until_done(client, job_id: str, poll: float) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(soft_wrap=True)  # never break a message (and the ids in it) at 80 columns
    seen: set[str] = set()
    with Progress(
        TextColumn("[bold]{task.fields[status]}"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("train", total=None, status="…", loss="-")
        while True:
            job = call(client.fine_tuning.jobs.retrieve, job_id)
            # Newest first from the API: collect unseen events, then show them oldest first.
            fresh = []
            for event in call(client.fine_tuning.jobs.list_events, job_id, limit=100):
                if event.id in seen:
                    break
                fresh.append(event)
            for event in reversed(fresh):
                seen.add(event.id)
                if event.type == "metrics" and event.data:
                    progress.update(
                        task,
                        total=event.data.get("total_steps"),
                        completed=event.data.get("step", 0),
                        loss=f"{event.data.get('train_loss', 0):.4f}",
                    )
                else:
                    style = {"error": "red", "warn": "yellow"}.get(event.level, "")
                    progress.console.print(f"[{style}]{event.message}[/{style}]" if style else event.message)
            progress.update(task, status=job.status)
            if job.status in TERMINAL or job.status == "paused":
                break
            time.sleep(poll)
    if job.status == "succeeded":
        console.print(f"fine_tuned_model: [bold]{job.fine_tuned_model}[/bold]")
    elif job.status == "failed" and job.error:
        console.print(f"[red]failed: {job.error.code}: {job.error.message}[/red]")
        raise typer.Exit(1)
