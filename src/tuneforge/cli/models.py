"""`tuneforge models add|list|remove`: the base models this server offers (no server needed).

    tuneforge models add smollm2 ~/models/SmolLM2-135M-Instruct.Q4_1.gguf --alias gpt-4o-mini
    tuneforge models add my-llama /srv/models/llama-3.2-1b
    tuneforge models add qwen Qwen/Qwen2.5-0.5B-Instruct      # a hub id: not checked offline
    tuneforge models list [--json]
    tuneforge models remove smollm2

Registered models live in the store, beside TUNEFORGE_BASE_MODELS / TUNEFORGE_MODEL_ALIASES
(which keep working and win on a clash). A bad local source is refused here, nothing stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tuneforge.cli import app
from tuneforge.cli.options import DataDir, load_settings

models_app = typer.Typer(
    help="Add, list and remove base models (works without a running server).", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def session_factory(settings: Any):
    from tuneforge.store.db import make_engine, make_sessionmaker, migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate(engine)
    return make_sessionmaker(engine)


def base_source(settings: Any, model: str) -> str:
    """A model name (settings first, then the store) or a source -> what transformers loads."""
    from tuneforge.catalog import load_source
    from tuneforge.services.resolver import ModelResolver

    resolver = ModelResolver(settings)
    if model in resolver.catalog(None):
        return resolver.base(None, model).source
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return load_source(settings, model)  # no store yet: nothing registered (create none)
    with session_factory(settings)() as session:
        catalog = resolver.catalog(session)
        if model in catalog:
            return catalog.resolve_base(model).source
    return load_source(settings, model)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@models_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The name clients use, e.g. smollm2.")],
    source: Annotated[
        str, typer.Argument(help="A local Hugging Face directory, a .gguf file or a Hugging Face id.")
    ],
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", help="Another name for it (repeatable), e.g. gpt-4o-mini-2024-07-18."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Check SOURCE and register it as base model NAME (GGUF files are de-quantised on first use)."""
    from tuneforge.errors import TuneforgeError
    from tuneforge.model_sources import check_source
    from tuneforge.services import base_models
    from tuneforge.store.db import transaction

    settings = load_settings(data_dir)
    try:
        checked = check_source(source)
        with transaction(session_factory(settings)) as session:
            base_models.add(session, settings, name, checked.source, checked.kind, alias or [])
    except TuneforgeError as exc:
        _fail(exc.message)
    what = {
        "dir": "Hugging Face directory",
        "gguf": "GGUF file (de-quantised on first use)",
        "hub": "Hugging Face id",
    }[checked.kind]
    arch = f", {checked.architecture}" if checked.architecture else ""
    typer.echo(
        f"Added base model {name}: {what} {checked.source}{arch}"
        + (f"; aliases: {', '.join(alias)}" if alias else "")
        + "."
    )
    if checked.note:
        typer.echo(f"note: {checked.note}")


@models_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array")] = False,
    data_dir: DataDir = None,
) -> None:
    """Every base model: built in, from settings, and registered; with aliases."""
    from tuneforge.services import base_models

    settings = load_settings(data_dir)
    with session_factory(settings)() as session:
        rows = base_models.list_all(session, settings)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows]))
        return
    typer.echo("name\torigin\tsource\taliases")
    for r in rows:
        source = r.note or r.source
        typer.echo(f"{r.name}\t{r.origin}\t{source}\t{', '.join(r.aliases)}")


@models_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="A registered base model or alias.")], data_dir: DataDir = None
) -> None:
    """Remove a registered base model (and its aliases) or one alias. Fine-tuned models made from
    it keep working; new jobs and chats can no longer name it."""
    from tuneforge.errors import TuneforgeError
    from tuneforge.services import base_models
    from tuneforge.store.db import transaction

    settings = load_settings(data_dir)
    try:
        with transaction(session_factory(settings)) as session:
            what = base_models.remove(session, settings, name)
    except TuneforgeError as exc:
        _fail(exc.message)
    typer.echo(f"Removed {what} {name}.")


@models_app.command("export")
def export_(
    model: Annotated[str, typer.Argument(help="A fine-tuned model or checkpoint (ft:...).")],
    fmt: Annotated[str, typer.Option("--format", help="peft | merged | gguf")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Directory to create (must not exist, or be empty).")
    ],
    dtype: Annotated[str | None, typer.Option(help="f16 | bf16 | f32 (merged, gguf; default f16)")] = None,
    quant: Annotated[str | None, typer.Option(help="q8_0 (gguf only)")] = None,
    project: Annotated[str, typer.Option(help="The project that owns MODEL.")] = "default",
    data_dir: DataDir = None,
) -> None:
    """Export a fine-tuned model or checkpoint: the LoRA adapter (peft), full Hugging Face weights
    (merged), or a GGUF file with an Ollama Modelfile (gguf). No server needed."""
    from sqlalchemy import select

    from tuneforge.errors import TuneforgeError
    from tuneforge.export import export
    from tuneforge.services.export import source_for
    from tuneforge.services.resolver import ModelResolver
    from tuneforge.store.tables import Project

    settings = load_settings(data_dir)
    try:
        with session_factory(settings)() as session:
            project_id = session.scalar(select(Project.id).where(Project.name == project))
            source = source_for(session, ModelResolver(settings), project_id or "", model)
        out = export(source, fmt, output, dtype=dtype, quant=quant)
    except TuneforgeError as exc:
        _fail(exc.message)
    typer.echo(f"Exported {model} as {fmt} to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
