"""The training engine's contract with whoever runs it (the CLI, a job worker's child process).

`training/` imports nothing from `api/` or `store/`: a caller builds a `TrainSpec`, passes a
`Reporter`, and calls `tuneforge.training.train(spec, reporter)`.

On-disk layout under `TrainSpec.output_dir` (stable: jobs and serving rely on it):

    state/                    full resumable state (weights/adapter, optimizer, scheduler, RNG, step)
    checkpoints/step-000012/  one servable model per kept epoch (see CHECKPOINT_META)
    final/                    the finished model, same layout as a checkpoint
    step_metrics.csv          step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy
    dpo_reference.pt          DPO only: the reference log-probs, computed once per run

A servable model directory holds either a PEFT adapter (adapter_config.json +
adapter_model.safetensors) or full weights (config.json + model.safetensors), the tokenizer files
with the exact chat template used in training, and `tuneforge.json` (CHECKPOINT_META) with at least
{"format": 1, "kind": "lora" | "full", "base_model": <HF id or absolute local dir>, "step": int,
"epoch": int, "metrics": {...}}.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Protocol

CHECKPOINT_META = "tuneforge.json"
# What a resumed run reads back from `output_dir` (the rest of it is written anew): state/, the
# metrics rows so far, and DPO's reference log-probs (training/dpo.py). A job's state is published
# from these where another machine may resume it (jobs/job_state.py).
RESUME_FILES = ("state", "step_metrics.csv", "dpo_reference.pt")

Auto = Literal["auto"]


class _Values(Mapping[str, Any]):
    """Named hyperparameter values, read as attributes (`hp.n_epochs`) or as a mapping. Which
    names exist is defined once, per method, in `training/hparams.py`; immutable."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and dict(self) == dict(other)  # type: ignore[call-overload]

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (keyword-only constructor)
        return (_rebuild, (type(self), self._values))


def _rebuild(cls: type[_Values], values: dict[str, Any]) -> _Values:
    return cls(**values)


class Hyperparameters(_Values):
    """What is asked for: numbers or "auto"; a name left out means "auto"."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values.get(name, "auto")


class ResolvedHyperparameters(_Values):
    """What the trainer uses: every `auto` resolved (hparams.resolve)."""


@dataclass
class TrainSpec:
    base_model: str  # Hugging Face id or local directory (already resolved)
    training_file: Path
    output_dir: Path
    validation_file: Path | None = None
    method: Literal["lora", "full"] = "lora"
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    seed: int = 0
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    max_seq_len: int | None = None  # None: the model's context limit (capped, see docs)
    keep_checkpoints: int = 3  # epoch checkpoints kept (OpenAI keeps the last 3)
    export_merged: bool = False  # LoRA only: also write merged full weights to final/merged
    # Continue training an existing fine-tuned model: for LoRA, the adapter dir to start from
    # (base_model is then that adapter's base); for a full fine-tune, pass its dir as base_model.
    init_adapter: Path | None = None
    device: str | None = None  # None: cuda if available, else cpu
    threads: int | None = None  # CPU threads (torch); None: every CPU this process may use
    # OpenAI's method.type: which trainer runs (sft.py or dpo.py); `method` above is lora | full.
    method_type: Literal["supervised", "dpo"] = "supervised"
    # GPU speed settings (training/accel.py); none of them changes what a CPU run computes.
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"  # auto: on CUDA, when memory is short
    torch_compile: bool = False  # compile each decoder layer (pays on long jobs only)
    fused_loss: bool | None = None  # fused linear + cross-entropy; None: on CUDA


class StopRequest(str, Enum):
    CANCEL = "cancel"  # stop within seconds, keep nothing new
    PAUSE = "pause"  # save full state under state/, then return


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
    final_dir: Path | None  # set when succeeded
    metrics_csv: Path
