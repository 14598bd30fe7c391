"""The `tuneforge` command line."""

import typer

app = typer.Typer(help="tuneforge: a self-hosted, OpenAI-compatible fine-tuning service.", no_args_is_help=True)
