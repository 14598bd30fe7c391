"""What every server-talking command shares (`jobs`, `files`): the openai client built from flags or
the environment, one-line API errors, and output (JSON, or a table that never truncates ids).

Base URL and key: --base-url / --api-key, else OPENAI_BASE_URL / OPENAI_API_KEY, else
TUNEFORGE_BASE_URL / TUNEFORGE_API_KEY, else http://127.0.0.1:8000/v1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
NO_KEY = "no API key: set OPENAI_API_KEY or pass --api-key"

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="Server base URL ending in /v1. Env: OPENAI_BASE_URL or TUNEFORGE_BASE_URL.",
        show_default=DEFAULT_BASE_URL,
    ),
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", help="API key. Env: OPENAI_API_KEY or TUNEFORGE_API_KEY.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (the API's objects) instead of a table.")]


def make_client(base_url: str | None, api_key: str | None):
    """An openai client; a missing key is a plain message and exit status 2 (a usage error)."""
    key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("TUNEFORGE_API_KEY")
    if not key:
        typer.echo(NO_KEY, err=True)
        raise typer.Exit(2)
    from openai import OpenAI

    url = (
        base_url
        or os.environ.get("OPENAI_BASE_URL")
        or os.environ.get("TUNEFORGE_BASE_URL")
        or DEFAULT_BASE_URL
    )
    return OpenAI(base_url=url, api_key=key, max_retries=2)


def call(fn, *args, **kwargs):
    """Run an SDK call; an API error becomes a one-line message and exit status 1."""
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


def dump(obj: Any) -> Any:
    return obj.model_dump() if hasattr(obj, "model_dump") else obj


def print_json(obj: Any, *, compact: bool = False) -> None:
    typer.echo(json.dumps(dump(obj), indent=None if compact else 2))


def print_list(items: Sequence[Any], as_json: bool) -> bool:
    """`--json`: the items as a JSON array, and True (the caller prints nothing else)."""
    if as_json:
        typer.echo(json.dumps([dump(item) for item in items]))
    return as_json


def when(ts: int | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    keep: Sequence[str] = ("id",),
    console: Any = None,
) -> None:
    """Rows as a table. Piped (stdout not a terminal): a header and tab-separated lines, nothing
    cut. On a terminal: a rich table where nothing is cut with an ellipsis: the first `keep`
    column (the id) is never wrapped, other `keep` columns wrap, and the rest wrap too and are
    dropped from the right when the row does not fit the width."""
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    if console is None and not sys.stdout.isatty():
        typer.echo("\t".join(columns))
        for row in text_rows:
            typer.echo("\t".join(row))
        return
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    widths = [max([len(c)] + [len(r[i]) for r in text_rows]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    # 3 = a column's padding and border; other columns need room for about 10 characters
    while (
        sum(widths[i] if columns[i] in keep else min(widths[i], 10) for i in shown) + 3 * len(shown) + 1
        > console.width
    ):
        droppable = [i for i in shown if columns[i] not in keep]
        if not droppable:
            break
        shown.remove(droppable[-1])
    table = Table()
    for i in shown:
        if columns[i] == keep[0]:
            table.add_column(columns[i], no_wrap=True, min_width=widths[i])
        else:
            table.add_column(columns[i], overflow="fold")
    for row in text_rows:
        table.add_row(*(row[i] for i in shown))
    console.print(table)
    if len(shown) < len(columns):
        hidden = ", ".join(columns[i] for i in range(len(columns)) if i not in shown)
        console.print(f"(not shown at this width: {hidden}; see --json)", highlight=False)
