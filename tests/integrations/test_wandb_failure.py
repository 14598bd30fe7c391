"""A W&B failure never fails training: it becomes one warn event (without the key), the wrapped
reporter keeps receiving everything, and W&B is left alone afterwards."""

from __future__ import annotations

from pathlib import Path

from tests.training.helpers import Recorder
from tuneforge.integrations.wandb import WandbReporter
from tuneforge.training.spec import ResolvedHyperparameters

KEY = "wandb-secret-key-0123456789abcdef0123"


def test_wandb_failure_becomes_a_warn_event(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    inner = Recorder()
    # An init W&B refuses (an invalid mode that mentions the key): the first call fails.
    reporter = WandbReporter(
        inner, {"project": "p", "dir": str(tmp_path), "mode": f"bogus-{KEY}"}, secret=KEY
    )
    reporter.hyperparameters(ResolvedHyperparameters(n_epochs=1, batch_size=2, learning_rate_multiplier=1.0))
    for step in (1, 2):
        reporter.metrics({"step": step, "total_steps": 2, "train_loss": 1.0 / step})
    reporter.checkpoint(2, 1, Path(tmp_path), {"step": 2})
    warnings = [m for level, m in inner.events if level == "warn"]
    assert len(warnings) == 1 and warnings[0].startswith("Weights & Biases logging failed")
    assert KEY not in warnings[0] and "***" in warnings[0]
    assert [s["step"] for s in inner.steps] == [1, 2]  # training data still flows
    assert len(inner.hp) == 1 and len(inner.checkpoints) == 1
    assert reporter.stop_requested() is None
