"""`tuneforge train`: fine-tune a model from files on disk, no server, with a rich progress bar."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tuneforge.cli import app
from tuneforge.training import hparams

# --config keys: the long option names with '_' (flags given on the command line win).
CONFIG_KEYS = {
    "model",
    "training_file",
    "validation_file",
    "output",
    "method",
    "n_epochs",
    "batch_size",
    "learning_rate_multiplier",
    "seed",
    "export_merged",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "max_seq_len",
    "keep_checkpoints",
    "device",
}


def resolve_model(name: str) -> str:
    """A base model name (tuneforge-tiny, settings, `tuneforge models add`) resolves like the
    server's; a .gguf is de-quantised once; a Hugging Face id (downloaded on first use where the
    machine is online) or a local directory is passed through."""
    from tuneforge.cli.models import base_source
    from tuneforge.config import Settings

    return base_source(Settings().resolved(), name)


@app.command("train")
def train_command(
    model: Annotated[
        str | None, typer.Option(help="tuneforge-tiny, a Hugging Face id or a local model dir")
    ] = None,
    training_file: Annotated[Path | None, typer.Option(help="JSONL training file (OpenAI format)")] = None,
    validation_file: Annotated[Path | None, typer.Option(help="JSONL validation file")] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Run directory (default runs/train-<time>); rerun with the same one to resume"),
    ] = None,
    method: Annotated[str | None, typer.Option(help="lora (default) or full")] = None,
    n_epochs: Annotated[int | None, typer.Option(help=hparams.N_EPOCHS.help)] = None,
    batch_size: Annotated[int | None, typer.Option(help=hparams.BATCH_SIZE.help)] = None,
    learning_rate_multiplier: Annotated[
        float | None, typer.Option(help=hparams.LEARNING_RATE_MULTIPLIER.help)
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0)")] = None,
    export_merged: Annotated[
        bool | None,
        typer.Option("--export-merged/--no-export-merged", help="LoRA: also write merged full weights"),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="JSON file with any of these options (keys with '_'); flags win")
    ] = None,
) -> None:
    """Fine-tune MODEL on TRAINING_FILE. Ctrl-C pauses (state saved: run again to resume).
    Several processes: `torchrun --nproc-per-node N $(which tuneforge) train ...` (data-parallel;
    a full fine-tune is sharded with FSDP)."""
    flags = {
        "model": model,
        "training_file": training_file,
        "validation_file": validation_file,
        "output": output,
        "method": method,
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": learning_rate_multiplier,
        "seed": seed,
        "export_merged": export_merged,
    }
    options = _options(config, flags)
    spec = _spec(options)

    from rich.console import Console

    from tuneforge.errors import TuneforgeError
    from tuneforge.training import train

    parallel = _torchrun_rank()
    if parallel is not None and not parallel.is_main:
        _other_rank(spec, parallel)
    console = Console(stderr=True)
    reporter = ProgressReporter(console)
    previous = signal.signal(signal.SIGINT, reporter.on_interrupt)
    try:
        with reporter.progress:
            result = train(spec, reporter, parallel)
    except TuneforgeError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        _leave(parallel)
    hp = result.hyperparameters
    console.print(
        f"{result.status}: {result.steps}/{result.total_steps} steps, "
        f"{result.trained_tokens} trained tokens (n_epochs={hp.n_epochs}, "
        f"batch_size={hp.batch_size}, learning_rate_multiplier={hp.learning_rate_multiplier})"
    )
    if result.final_dir:
        console.print(f"model: {result.final_dir}")
    console.print(f"metrics: {result.metrics_csv}")
    if result.status == "paused":
        console.print(f"paused: run again with --output {spec.output_dir} to resume")
    raise typer.Exit(0 if result.status in ("succeeded", "paused") else 130)


def _torchrun_rank():
    """This process's rank when torchrun started it (WORLD_SIZE > 1 in its environment), with the
    process group set up (nccl on CUDA, else gloo); None otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    from tuneforge.training.parallel import Parallel

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return Parallel(dist.get_rank(), dist.get_world_size(), threads=threads)


def _other_rank(spec, parallel) -> None:
    """A rank other than 0: trains in step with rank 0, which reports and decides (Ctrl-C reaches
    every rank of the terminal: only rank 0 acts on it)."""
    from tuneforge.errors import TuneforgeError
    from tuneforge.training import train

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = train(spec, None, parallel)
    except TuneforgeError:
        raise typer.Exit(1) from None  # (rank 0 says why)
    finally:
        _leave(parallel)
    raise typer.Exit(0 if result.status in ("succeeded", "paused") else 130)


def _leave(parallel) -> None:
    if parallel is not None:
        import torch.distributed as dist

        dist.destroy_process_group()


def _options(config: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"cannot read {config}: {exc}", param_hint="--config") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must hold a JSON object", param_hint="--config")
        unknown = sorted(set(loaded) - CONFIG_KEYS)
        if unknown:
            raise typer.BadParameter(
                f"unknown keys {unknown}; known: {sorted(CONFIG_KEYS)}", param_hint="--config"
            )
        options.update(loaded)
    options.update({k: v for k, v in flags.items() if v is not None})
    for required in ("model", "training_file"):
        if not options.get(required):
            raise typer.BadParameter(f"--{required.replace('_', '-')} is required (flag or --config)")
    return options


def _spec(o: dict[str, Any]):
    from tuneforge.training.spec import Hyperparameters, TrainSpec

    if o.get("method", "lora") not in ("lora", "full"):
        raise typer.BadParameter("must be lora or full", param_hint="--method")
    for key in ("training_file", "validation_file"):
        if o.get(key) and not Path(o[key]).is_file():
            raise typer.BadParameter(f"no such file: {o[key]}", param_hint=f"--{key.replace('_', '-')}")
    output = Path(o.get("output") or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S"))
    extra = {
        k: o[k]
        for k in ("lora_rank", "lora_alpha", "lora_dropout", "max_seq_len", "keep_checkpoints", "device")
        if o.get(k) is not None
    }
    return TrainSpec(
        base_model=resolve_model(str(o["model"])),
        training_file=Path(o["training_file"]),
        validation_file=Path(o["validation_file"]) if o.get("validation_file") else None,
        output_dir=output,
        method=o.get("method", "lora"),
        seed=int(o.get("seed", 0)),
        export_merged=bool(o.get("export_merged", False)),
        hyperparameters=Hyperparameters(**{d.name: o.get(d.name, "auto") for d in hparams.definitions()}),
        **extra,
    )


class ProgressReporter:
    """A Reporter drawing a rich progress bar: step, loss, tokens/s, ETA."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("train", total=None, loss="-", tps="-")
        self.stop = None
        self._tokens = 0
        self._seconds = 0.0

    def on_interrupt(self, signum, frame) -> None:
        from tuneforge.training.spec import StopRequest

        # first Ctrl-C: pause cleanly (resumable); second: cancel
        self.stop = StopRequest.CANCEL if self.stop is not None else StopRequest.PAUSE
        self.console.print(f"[yellow]{self.stop.value} requested[/yellow]")

    def event(self, message: str, *, level: str = "info", data: dict | None = None) -> None:
        style = {"warn": "yellow", "error": "red"}.get(level, "dim")
        self.console.print(f"[{style}]{message}[/{style}]")

    def hyperparameters(self, resolved) -> None:
        self.console.print(
            f"[dim]hyperparameters: n_epochs={resolved.n_epochs} batch_size="
            f"{resolved.batch_size} learning_rate_multiplier="
            f"{resolved.learning_rate_multiplier}[/dim]"
        )

    def metrics(self, data: dict[str, Any]) -> None:
        loss = f"{data['train_loss']:.4f}"
        if "full_valid_loss" in data:
            loss += f" (full valid {data['full_valid_loss']:.4f})"
        elif "valid_loss" in data:
            loss += f" (valid {data['valid_loss']:.4f})"
        self.progress.update(self.task, total=data["total_steps"], completed=data["step"], loss=loss)

    def throughput(self, tokens: int, seconds: float) -> None:
        self._tokens += tokens
        self._seconds += seconds
        if self._seconds > 0:
            self.progress.update(self.task, tps=f"{self._tokens / self._seconds:,.0f}")

    def checkpoint(self, step: int, epoch: int, path: Path, metrics: dict[str, Any]) -> None:
        self.console.print(f"[green]epoch {epoch}: checkpoint at step {step}[/green] {path}")

    def checkpoint_removed(self, step: int, path: Path) -> None:
        pass

    def stop_requested(self):
        return self.stop
