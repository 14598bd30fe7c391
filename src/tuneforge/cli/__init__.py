"""The `tuneforge` command line: a small root that mounts one sub-command module per concern."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="tuneforge: a self-hosted, OpenAI-compatible fine-tuning service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# Each module registers its commands on `app` (or adds a sub-Typer) when imported. Modules keep
# heavy imports (torch, transformers) inside their command functions so `--help` stays fast.
_COMMAND_MODULES: list[str] = [
    "data",
    "serve",
    "keys",
    "worker",
    "files",
    "jobs",
    "train",
    "webhooks",
    "projects",
    "usage",
    "models",
]


def _mount() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"tuneforge.cli.{name}")


_mount()
