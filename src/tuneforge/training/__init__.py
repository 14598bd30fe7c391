"""The training engine: `train(spec, reporter)` and its contract (spec.py).

Names are imported lazily so that `import tuneforge.training` (and the CLI's --help) stays fast:
torch and transformers load only when `train` or a renderer is first used.
"""

from __future__ import annotations

from typing import Any

# One trainer per method (OpenAI's method.type), each `train(spec, reporter) -> TrainResult`.
TRAINERS = {"supervised": "tuneforge.training.sft", "dpo": "tuneforge.training.dpo"}

_EXPORTS = {
    "TrainSpec": "tuneforge.training.spec",
    "Hyperparameters": "tuneforge.training.spec",
    "ResolvedHyperparameters": "tuneforge.training.spec",
    "Reporter": "tuneforge.training.spec",
    "StopRequest": "tuneforge.training.spec",
    "Parallel": "tuneforge.training.parallel",
    "TrainResult": "tuneforge.training.spec",
    "CHECKPOINT_META": "tuneforge.training.spec",
    "render_example": "tuneforge.training.render",
    "Rendered": "tuneforge.training.render",
    "audit": "tuneforge.training.render",
    "ensure_tiny_model": "tuneforge.training.tiny",
    "TINY_NAME": "tuneforge.training.tiny",
    "tiny_dir_name": "tuneforge.training.tiny",
}

__all__ = sorted([*_EXPORTS, "train", "TRAINERS"])


def train(spec: Any, reporter: Any, parallel: Any = None) -> Any:
    """Train with the trainer of `spec.method_type` (spec.py has the contract); `parallel`: this
    process's rank in a data-parallel run (parallel.py), None for a run of one process."""
    import importlib

    return importlib.import_module(TRAINERS[spec.method_type]).train(spec, reporter, parallel)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuneforge.training' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
