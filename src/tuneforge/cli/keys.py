"""`tuneforge keys create|list|revoke`: manage API keys directly in the configured database."""

from __future__ import annotations

from typing import Annotated

import typer

from tuneforge.cli import app
from tuneforge.cli.client import AsJson, print_list, print_table
from tuneforge.cli.options import DataDir, load_settings

keys_app = typer.Typer(
    help="Create, list and revoke API keys (works without a running server).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


def open_sessionmaker(data_dir):
    from tuneforge.store.db import make_engine, make_sessionmaker, migrate

    settings = load_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate(engine)
    return make_sessionmaker(engine)


@keys_app.command("create")
def create(
    project: Annotated[str, typer.Option(help="Project the key belongs to (created if new).")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="Allow admin-only operations.")] = False,
    name: Annotated[str | None, typer.Option(help="A label shown by `keys list`.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a key and print its secret, once, as the last line of output."""
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import transaction

    with transaction(open_sessionmaker(data_dir)) as session:
        key, secret = create_key(session, project, admin=admin, name=name)
        key_id = key.id
    typer.echo(
        f"Created {'admin ' if admin else ''}key {key_id} for project '{project}'. "
        "Store the secret now; it cannot be shown again:"
    )
    typer.echo(secret)


@keys_app.command("list")
def list_(
    project: Annotated[str | None, typer.Option(help="Only keys of this project.")] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """List keys (redacted) with their project and state."""
    from tuneforge.services.keys import list_keys
    from tuneforge.store.db import transaction

    columns = ("id", "project", "key", "role", "state", "name")
    with transaction(open_sessionmaker(data_dir)) as session:
        rows = [
            (
                k.id,
                p.name,
                k.redacted,
                "admin" if k.is_admin else "member",
                "revoked" if k.revoked_at else "active",
                k.name or "",
            )
            for k, p in list_keys(session, project)
        ]
    if not print_list([dict(zip(columns, row)) for row in rows], as_json):
        print_table(columns, rows, keep=("id", "key"))


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (key_…) from `keys list`.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: requests made with it get 401 from now on."""
    from tuneforge.errors import NotFound
    from tuneforge.services.keys import revoke_key
    from tuneforge.store.db import transaction

    try:
        with transaction(open_sessionmaker(data_dir)) as session:
            revoke_key(session, key_id)
    except NotFound as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Revoked {key_id}.")
