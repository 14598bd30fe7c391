"""What a run writes to disk: servable model dirs, the resumable state, step_metrics.csv.

Every directory is written beside its target and renamed into place, so a reader (serving, a
resumed run) never sees half of one, and a killed process leaves at worst a `.tmp-*` dir behind.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tuneforge.training.spec import CHECKPOINT_META

STATE_DIR = "state"
# (CSV column, metrics key) of OpenAI's step_metrics.csv; a method with other metrics passes its own.
CSV_COLUMNS = (
    ("step", "step"),
    ("train_loss", "train_loss"),
    ("train_accuracy", "train_mean_token_accuracy"),
    ("valid_loss", "valid_loss"),
    ("valid_mean_token_accuracy", "valid_mean_token_accuracy"),
)


def write_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create `target` (a directory) by filling a temp dir beside it, then renaming. An existing
    `target` is replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        fill(tmp)
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_servable(model, tokenizer, target: Path, meta: dict[str, Any], *, state_dict=None) -> Path:
    """A model dir that serving can load alone: adapter or full weights, tokenizer + chat template,
    generation config (stop ids), tuneforge.json. `state_dict`: the weights gathered whole from a
    sharded model (training/fsdp.py), written in place of the model's own."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state_dict)
        gen = getattr(model, "generation_config", None)
        if gen is not None and not (tmp / "generation_config.json").exists():
            gen.save_pretrained(tmp)  # PEFT saves no generation config; serving needs the stop ids
        tokenizer.save_pretrained(tmp)
        (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    return write_atomically(target, fill)


# --- resumable state --------------------------------------------------------------------------


def save_state(output_dir: Path, *, model, optimizer, scheduler, progress: dict[str, Any], full=None) -> Path:
    """Everything needed to continue exactly: trainable weights, optimizer, scheduler, RNG, progress.
    `full`: (trainable weights, optimizer state_dict) gathered whole from a sharded run
    (training/fsdp.py), saved in place of the model's and optimizer's own: the same files."""
    if full is None:
        full = (
            {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
            optimizer.state_dict(),
        )
    trainable = {n: t.contiguous() for n, t in full[0].items()}

    def fill(tmp: Path) -> None:
        save_file(trainable, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": full[1], "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        (tmp / "progress.json").write_text(json.dumps(progress, indent=2, sort_keys=True))

    return write_atomically(output_dir / STATE_DIR, fill)


def read_progress(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / STATE_DIR / "progress.json"
    return json.loads(path.read_text()) if path.is_file() else None


def matching_params(model, weights: dict[str, torch.Tensor]) -> dict[str, torch.nn.Parameter]:
    """The model's parameters by name, once a saved state's `weights` are exactly its trainable ones."""
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing or set(weights) - set(params):
        raise RuntimeError(f"state/ does not match this model (missing {missing[:3]})")
    return params


def load_state(output_dir: Path, *, model, optimizer, scheduler, place=None) -> None:
    """`place(model, optimizer, weights, optimizer_state)`: how a sharded run puts the whole saved
    tensors into its shards (training/fsdp.py); default: copied into the model and optimizer."""
    state = output_dir / STATE_DIR
    weights = load_file(str(state / "trainable.safetensors"))
    opt = torch.load(state / "optimizer.pt", weights_only=False)
    if place is not None:
        place(model, optimizer, weights, opt["optimizer"])
    else:
        params = matching_params(model, weights)
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    rng = torch.load(state / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


# --- checkpoints kept --------------------------------------------------------------------------


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if d.is_dir() and d.name.startswith("step-") and d.name[5:].isdigit():
            found.append((int(d.name[5:]), d))
    return sorted(found)


# --- step_metrics.csv --------------------------------------------------------------------------


class MetricsCsv:
    """OpenAI's step_metrics.csv, one row per step, flushed as it goes; 5 decimals, empty cells
    where no validation ran. Reopening for a resumed run keeps the rows up to the resumed step."""

    def __init__(
        self, path: Path, *, keep_up_to: int = 0, columns: tuple[tuple[str, str], ...] = CSV_COLUMNS
    ):
        self.path = path
        self._keys = [key for _column, key in columns[1:]]
        rows: list[list[str]] = []
        if keep_up_to and path.is_file():
            with path.open(newline="") as fh:
                rows = [r for r in list(csv.reader(fh))[1:] if r and int(r[0]) <= keep_up_to]
        self._fh = path.open("w", newline="")
        self._w = csv.writer(self._fh)
        self._w.writerow([column for column, _key in columns])
        self._w.writerows(rows)
        self._fh.flush()

    def write(self, m: dict[str, Any]) -> None:
        def cell(key: str) -> str:
            v = m.get(key)
            return "" if v is None else f"{v:.5f}"

        self._w.writerow([m["step"], *(cell(key) for key in self._keys)])
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class NoMetricsCsv:
    """Where ranks other than 0 of a data-parallel run write their metrics: nowhere."""

    def write(self, m: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
