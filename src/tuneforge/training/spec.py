"""The training engine's contract with whoever runs it (the CLI, a job worker's child process).

`training/` imports nothing from `api/` or `store/`: a caller builds a `TrainSpec`, passes a
`Reporter`, and calls `tuneforge.training.train(spec, reporter)`.

On-disk layout under `TrainSpec.output_dir` (stable: jobs and serving rely on it):

    state/                    full resumable state (weights/adapter, optimizer, scheduler, RNG, step)
    checkpoints/step-000012/  one servable model per kept epoch (see CHECKPOINT_META)
    final/                    the finished model, same layout as a checkpoint
    step_metrics.csv          step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy

A servable model directory holds either a PEFT adapter (adapter_config.json +
adapter_model.safetensors) or full weights (config.json + model.safetensors), the tokenizer files
with the exact chat template used in training, and `tuneforge.json` (CHECKPOINT_META) with at least
{"format": 1, "kind": "lora" | "full", "base_model": <HF id or absolute local dir>, "step": int,
"epoch": int, "metrics": {...}}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Protocol

CHECKPOINT_META = "tuneforge.json"

Auto = Literal["auto"]


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    beta: float | Auto = "auto"          # DPO only (hparams.METHOD_HYPERPARAMETERS)


@dataclass(frozen=True)
class ResolvedHyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None = None            # set by the DPO trainer, None for supervised runs


@dataclass
class TrainSpec:
    base_model: str                      # Hugging Face id or local directory (already resolved)
    training_file: Path
    output_dir: Path
    validation_file: Path | None = None
    method: Literal["lora", "full"] = "lora"
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    seed: int = 0
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    max_seq_len: int | None = None       # None: the model's context limit (capped, see docs)
    keep_checkpoints: int = 3            # epoch checkpoints kept (OpenAI keeps the last 3)
    export_merged: bool = False          # LoRA only: also write merged full weights to final/merged
    # Continue training an existing fine-tuned model: for LoRA, the adapter dir to start from
    # (base_model is then that adapter's base); for a full fine-tune, pass its dir as base_model.
    init_adapter: Path | None = None
    device: str | None = None            # None: cuda if available, else cpu
    # OpenAI's method.type: which trainer runs (sft.py or dpo.py); `method` above is lora | full.
    method_type: Literal["supervised", "dpo"] = "supervised"


class StopRequest(str, Enum):
    CANCEL = "cancel"                    # stop within seconds, keep nothing new
    PAUSE = "pause"                      # save full state under state/, then return


class Reporter(Protocol):
    """How the engine tells the outside world what happens. Every method must be cheap."""

    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None: ...

    def hyperparameters(self, resolved: ResolvedHyperparameters) -> None: ...

    def metrics(self, data: dict[str, Any]) -> None:
        """One per optimizer step: step, total_steps, train_loss, train_mean_token_accuracy,
        and valid_loss / valid_mean_token_accuracy / full_valid_loss /
        full_valid_mean_token_accuracy when computed at that step."""

    def checkpoint(self, step: int, epoch: int, path: Path, metrics: dict[str, Any]) -> None: ...

    def checkpoint_removed(self, step: int, path: Path) -> None: ...

    def stop_requested(self) -> StopRequest | None:
        """Polled between optimizer steps (and inside long evaluations)."""


@dataclass
class TrainResult:
    status: Literal["succeeded", "cancelled", "paused"]
    # What OpenAI bills: every token of the examples trained on (after truncation to the context
    # limit, no padding), once per epoch; equals the validator's `estimated_trained_tokens`.
    trained_tokens: int
    steps: int
    total_steps: int
    hyperparameters: ResolvedHyperparameters
    final_dir: Path | None               # set when succeeded
    metrics_csv: Path
