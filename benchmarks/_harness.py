"""What the training benchmarks (bench_train, bench_dpo, bench_gpu) share: each contestant runs in
a process of its own (the script again, as a worker), so peak memory does not mix; the worker's
config and result are JSON files; its peak RSS and CPU time; a reporter that only listens; what
every TRL contestant sets alike (LoRA, logging); the JSONL data files; the commit measured.

The benchmarks folder is not a package: a script puts its own folder on sys.path and imports this.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# --- data ---------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- measures of this process -------------------------------------------------------------------


def peak_rss_mb() -> float:
    """The process's high-water mark of resident memory, model loads included (ru_maxrss is KiB
    on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """This process's CPU time: on a shared machine, tokens per CPU-second are steadier than per
    wall second (though OpenMP threads spinning while they wait count too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def git_commit() -> str:
    """The short commit of the checkout the benchmarks run from ('' outside git)."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()


# --- the trainer's reporter ---------------------------------------------------------------------


class Listener:
    """A Reporter (training/spec.py) that never stops the run and keeps what a benchmark reads:
    the last metrics, the full-validation loss, the event messages."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}
        self.full_valid_loss: float | None = None
        self.events: list[str] = []

    def event(self, message: str, *, level: str = "info", data: dict | None = None) -> None:
        self.events.append(message)

    def hyperparameters(self, resolved: Any) -> None:
        pass

    def metrics(self, data: dict[str, Any]) -> None:
        self.last = data
        if data.get("full_valid_loss") is not None:
            self.full_valid_loss = data["full_valid_loss"]

    def checkpoint(self, step: int, epoch: int, path: Path, metrics: dict[str, Any]) -> None:
        pass

    def checkpoint_removed(self, step: int, path: Path) -> None:
        pass

    def stop_requested(self) -> None:
        return None


# --- contestants in their own processes ---------------------------------------------------------


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """`script` again as a worker process (its stdout dropped, its stderr kept for `collect`)."""
    return subprocess.Popen(
        [sys.executable, script, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def collect(name: str, proc: subprocess.Popen[str], out: Path, timeout: float | None = None) -> dict | None:
    """The worker's result (the JSON it wrote to `out`), or None once it is said why there is none:
    a non-zero exit (with the end of its stderr), no result, or more than `timeout` seconds."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        print(f"{name}: FAILED (over its {timeout:.0f} s)", flush=True)
        return None
    if proc.returncode != 0 or not out.is_file():
        print(f"{name}: FAILED (exit {proc.returncode})\n{stderr[-3000:]}", flush=True)
        return None
    return json.loads(out.read_text())


def worker_config(cfg_path: Path, seed: int) -> dict:
    """A worker's start: its config, torch seeded, and its thread count (the config's `threads`,
    where given) set."""
    import torch

    cfg = json.loads(cfg_path.read_text())
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(seed)
    return cfg


def write_result(out: Path, result: dict) -> None:
    """A worker's end: its result, with the process's peak RSS, where `collect` reads it."""
    result["peak_rss_mb"] = peak_rss_mb()
    out.write_text(json.dumps(result))


# --- TRL contestants ----------------------------------------------------------------------------

# What every TRL contestant's config sets beside the compared settings: no reporting or saving,
# the loss logged every step (its last value is the run's train loss), data loaded in-process.
TRL_QUIET: dict[str, Any] = dict(report_to=[], save_strategy="no", logging_steps=1, dataloader_num_workers=0)


def trl_lora(rank: int) -> Any:
    """The LoRA every TRL contestant trains, as ours does: rank r, alpha 2r, no dropout, every
    linear layer."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank, lora_alpha=rank * 2, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def last_loss(trainer: Any) -> float | None:
    """A transformers Trainer's last logged training loss."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses[-1] if losses else None
