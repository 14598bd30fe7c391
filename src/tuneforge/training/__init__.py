"""The training engine: `train(spec, reporter)` and its contract (spec.py).

Names are imported lazily so that `import tuneforge.training` (and the CLI's --help) stays fast:
torch and transformers load only when `train` or a renderer is first used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "train": "tuneforge.training.sft",
    "TrainSpec": "tuneforge.training.spec",
    "Hyperparameters": "tuneforge.training.spec",
    "ResolvedHyperparameters": "tuneforge.training.spec",
    "Reporter": "tuneforge.training.spec",
    "StopRequest": "tuneforge.training.spec",
    "TrainResult": "tuneforge.training.spec",
    "CHECKPOINT_META": "tuneforge.training.spec",
    "render_example": "tuneforge.training.render",
    "Rendered": "tuneforge.training.render",
    "audit": "tuneforge.training.render",
    "ensure_tiny_model": "tuneforge.training.tiny",
    "TINY_NAME": "tuneforge.training.tiny",
    "tiny_dir_name": "tuneforge.training.tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuneforge.training' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
