"""`tuneforge data validate FILE`: check a training file and show its statistics and cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tuneforge.cli import app

data_app = typer.Typer(help="Training data: validate files and show token statistics.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("validate")
def validate(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A JSONL training file")
    ],
    model: Annotated[
        str,
        typer.Option(
            help="Base model whose tokenizer counts tokens: a catalog "
            "name, a Hugging Face id or a local directory; "
            "'none' skips token statistics"
        ),
    ] = "tuneforge-tiny",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    price_per_million: Annotated[
        float, typer.Option(help="Training price per 1M tokens, for the cost estimate")
    ] = 0.0,
    n_epochs: Annotated[int | None, typer.Option(help="Epochs (default: OpenAI's auto rule)")] = None,
    max_seq_len: Annotated[int | None, typer.Option(help="Context limit (default: the tokenizer's)")] = None,
    max_errors: Annotated[int, typer.Option(help="Errors listed at most")] = 20,
    method: Annotated[
        str | None, typer.Option(help="The job's method: supervised or dpo (default: from the first example)")
    ] = None,
) -> None:
    """Check FILE against OpenAI's fine-tuning formats; exit status 1 when it has errors."""
    from tuneforge.config import Settings
    from tuneforge.training.data import detect_method, validate_file

    if method not in (None, "supervised", "dpo"):
        typer.echo(f"error: --method must be supervised or dpo, not {method!r}", err=True)
        raise typer.Exit(2)

    tokenizer = None if model.lower() == "none" else _load_tokenizer(model, Settings().resolved())
    report = validate_file(
        file,
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        price_per_million_tokens=price_per_million,
        n_epochs=n_epochs,
        max_errors=max_errors,
        method=method or detect_method(file),
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        _print_report(file, model, report)
    raise typer.Exit(0 if report.ok else 1)


def _load_tokenizer(model: str, settings: Any) -> Any:
    """Catalog names (tuneforge-tiny, configured or registered models, aliases) resolve through
    the resolver; anything else is a Hugging Face id, a local directory or a .gguf file."""
    from transformers import AutoTokenizer

    from tuneforge.cli.models import base_source

    source = base_source(settings, model)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot load a tokenizer for {model!r}: {exc}", err=True)
        raise typer.Exit(2) from None


def _print_report(file: Path, model: str, report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    status = "[green]valid[/green]" if report.ok else f"[red]{report.n_errors} error(s)[/red]"
    fmt = f", format {report.format}" if report.format else ""
    console.print(
        f"[bold]{file}[/bold]: {report.n_examples} valid example(s){fmt}, {status}", highlight=False
    )

    if report.errors:
        errors = Table(title="Errors", title_justify="left")
        for col in ("line", "code", "field", "message"):
            errors.add_column(col, overflow="fold")
        for e in report.errors:
            errors.add_row("-" if e.line is None else str(e.line), e.code, e.param or "", e.message)
        console.print(errors)
        if report.n_errors > len(report.errors):
            console.print(f"... and {report.n_errors - len(report.errors)} more")

    if report.n_examples == 0:  # nothing to count or estimate
        return
    dists = Table(title=f"Per example (tokens: {model})", title_justify="left")
    dists.add_column("")
    for col in ("min", "max", "mean", "median", "p10", "p90"):
        dists.add_column(col, justify="right")
    for label, d in (
        ("messages", report.messages_per_example),
        ("total tokens", report.total_tokens_per_example),
        ("trained tokens", report.trained_tokens_per_example),
    ):
        if d is not None:
            dists.add_row(
                label, str(d.min), str(d.max), f"{d.mean:.1f}", f"{d.median:g}", f"{d.p10:g}", f"{d.p90:g}"
            )
    console.print(dists)

    totals = Table(title="Training estimate", title_justify="left", show_header=False)
    totals.add_column("")
    totals.add_column("", justify="right")
    totals.add_row("examples missing a system message", str(report.n_missing_system))
    totals.add_row("examples missing a user message", str(report.n_missing_user))
    if report.n_too_long is not None:
        totals.add_row(f"examples over {report.max_seq_len} tokens (truncated)", str(report.n_too_long))
    totals.add_row("epochs" + (" (auto)" if report.n_epochs_auto else ""), str(report.n_epochs))
    if report.billing_tokens is not None:
        totals.add_row("billing tokens (per epoch)", f"{report.billing_tokens:,}")
        totals.add_row("estimated trained tokens", f"{report.estimated_trained_tokens:,}")
        if report.price_per_million_tokens:
            totals.add_row(
                f"estimated cost at {report.price_per_million_tokens:g} / 1M", f"{report.estimated_cost:,.2f}"
            )
    console.print(totals)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
