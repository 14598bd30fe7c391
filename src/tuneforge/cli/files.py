"""`tuneforge files upload|list|get|delete|content`: the Files API of a running server, through the
openai SDK (so `jobs create --training-file` has an id to take)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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

files_app = typer.Typer(
    help="Upload, list, inspect, download and delete files on a running server.", no_args_is_help=True
)
app.add_typer(files_app, name="files")


@files_app.command("upload")
def upload(
    path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="The file (a .jsonl for fine-tune)"),
    ],
    purpose: Annotated[str, typer.Option(help="fine-tune, batch, user_data, …")] = "fine-tune",
    as_json: AsJson = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Upload a file; print its id (the last line) or, with --json, the file object."""
    client = make_client(base_url, api_key)
    with path.open("rb") as fh:
        created = call(client.files.create, file=(path.name, fh), purpose=purpose)
    if as_json:
        print_json(created, compact=True)
    else:
        typer.echo(f"Uploaded {path.name} ({created.bytes} bytes, purpose {created.purpose}):", err=True)
        typer.echo(created.id)


@files_app.command("list")
def list_(
    purpose: Annotated[str | None, typer.Option(help="Only files of this purpose.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: AsJson = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """List files, newest first."""
    kwargs = {"limit": limit} | ({"purpose": purpose} if purpose else {})
    page = call(make_client(base_url, api_key).files.list, **kwargs)
    if print_list(page.data, as_json):
        return
    print_table(
        ("id", "filename", "purpose", "bytes", "created_at"),
        [(f.id, f.filename, f.purpose, f.bytes, when(f.created_at)) for f in page.data],
    )


@files_app.command("get")
def get(file_id: str, as_json: AsJson = False, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Print one file object (indented JSON; --json: one line)."""
    print_json(call(make_client(base_url, api_key).files.retrieve, file_id), compact=as_json)


@files_app.command("delete")
def delete(file_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Delete a file."""
    call(make_client(base_url, api_key).files.delete, file_id)
    typer.echo(f"Deleted {file_id}.")


@files_app.command("content")
def content(
    file_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Download a file's bytes (to stdout, or -o PATH)."""
    response = call(make_client(base_url, api_key).files.content, file_id)
    if output is None:
        sys.stdout.buffer.write(response.read())
        sys.stdout.flush()
        return
    response.write_to_file(output)
    typer.echo(f"Wrote {output}.", err=True)
