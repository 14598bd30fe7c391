"""Weights & Biases: a job's `integrations=[{"type": "wandb", "wandb": {...}}]` becomes a W&B run
that receives the job's configuration, step metrics (training and validation) and checkpoints.

`with_integrations` wraps the job's Reporter in the training child process: the wrapper forwards
every call unchanged and mirrors it to W&B. W&B can never fail the training: any W&B error becomes
one `warn` event on the job and W&B is left alone for the rest of the run.

The API key comes only from server configuration (Settings.wandb_api_key, handed to the W&B
library through this child's environment); it never appears in the job, an event or a log line.
WANDB_MODE=offline writes the run under WANDB_DIR (default <data_dir>/wandb) for a later
`wandb sync`.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.training import hparams
from tuneforge.training.spec import Reporter, ResolvedHyperparameters, StopRequest

log = logging.getLogger("tuneforge.integrations.wandb")


class WandbReporter:
    """A Reporter that forwards to `inner` and logs to a W&B run (started lazily, at the first
    call, so a failing `wandb.init` is reported as a warn event through `inner`)."""

    def __init__(self, inner: Reporter, init: dict[str, Any], secret: str | None = None):
        self._inner = inner
        self._init = init
        self._secret = secret
        self._run = None
        self._off = False

    # ---- W&B side, never raising ---------------------------------------------------------------
    def _wandb(self, action) -> None:
        if self._off:
            return
        try:
            if self._run is None:
                import wandb

                self._run = wandb.init(**self._init)
                atexit.register(self.close)
                where = f"offline run in {self._run.dir}" if self._run.offline else self._run.url
                self._inner.event(
                    f"Weights & Biases run {self._run.id} started: {where}",
                    data={"wandb_run_id": self._run.id},
                )
            action(self._run)
        except Exception as exc:  # noqa: BLE001  any W&B failure: warn once, train on
            self._off = True
            text = f"{type(exc).__name__}: {exc}"
            if self._secret:
                text = text.replace(self._secret, "***")
            log.warning("W&B disabled for this run: %s", text)
            self._inner.event(
                f"Weights & Biases logging failed and is off for this run: {text}", level="warn"
            )

    def close(self) -> None:
        run, self._run = self._run, None
        if run is not None and not self._off:
            try:
                run.finish()
            except Exception:  # noqa: BLE001
                log.warning("W&B run did not finish cleanly", exc_info=True)

    # ---- Reporter protocol -----------------------------------------------------------------------
    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self._inner.event(message, level=level, data=data)

    def hyperparameters(self, resolved: ResolvedHyperparameters) -> None:
        self._inner.hyperparameters(resolved)
        values = dict(resolved)
        self._wandb(lambda run: run.config.update({"hyperparameters": values}, allow_val_change=True))

    def metrics(self, data: dict[str, Any]) -> None:
        self._inner.metrics(data)
        values = {
            k: v
            for k, v in data.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
        }
        self._wandb(lambda run: run.log(values, step=int(data["step"])))

    def checkpoint(self, step: int, epoch: int, path: Path, metrics: dict[str, Any]) -> None:
        self._inner.checkpoint(step, epoch, path, metrics)

        def log_checkpoint(run) -> None:
            run.log({"checkpoint/step": step, "checkpoint/epoch": epoch}, step=step)
            run.summary["last_checkpoint_step"] = step

        self._wandb(log_checkpoint)

    def checkpoint_removed(self, step: int, path: Path) -> None:
        self._inner.checkpoint_removed(step, path)

    def state_saved(self, output_dir: Path, step: int) -> None:  # optional hook: passed on
        hook = getattr(self._inner, "state_saved", None)
        if hook is not None:
            hook(output_dir, step)

    def stop_requested(self) -> StopRequest | None:
        return self._inner.stop_requested()


def run_settings(settings: Settings, job, spec, cfg: dict[str, Any]) -> dict[str, Any]:
    """The `wandb.init` arguments for one integration entry of `job`."""
    directory = settings.wandb_dir or os.environ.get("WANDB_DIR") or settings.data_dir / "wandb"
    Path(directory).mkdir(parents=True, exist_ok=True)
    config = {
        "fine_tuning_job_id": job.id,
        "model": job.model,
        "base_model": spec.base_model,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "seed": job.seed,
        "suffix": job.suffix,
        "method": job.method.get("type", "supervised") if job.method else "supervised",
        "hyperparameters": hparams.stored(job.method),
    }
    import wandb

    return {
        "project": cfg["project"],
        "name": cfg.get("name") or job.id,
        "entity": cfg.get("entity"),
        "tags": cfg.get("tags") or None,
        "config": config,
        "dir": str(directory),
        "reinit": "create_new",
        "settings": wandb.Settings(
            silent=True, init_timeout=60, console="off", disable_git=True, x_disable_stats=True
        ),
    }


def with_integrations(settings: Settings, job, spec, reporter: Reporter) -> Reporter:
    """`reporter`, wrapped once per W&B integration of `job` (unchanged when it has none)."""
    entries = [i["wandb"] for i in (job.integrations or []) if i.get("type") == "wandb"]
    if not entries:
        return reporter
    secret = settings.wandb_api_key.get_secret_value() if settings.wandb_api_key else None
    if secret:
        os.environ["WANDB_API_KEY"] = secret  # this child process only; W&B reads it
    for cfg in entries:
        try:
            init = run_settings(settings, job, spec, cfg)
        except Exception as exc:  # noqa: BLE001  (wandb missing, unwritable dir): warn, go on
            reporter.event(
                f"Weights & Biases logging is off for this run: {type(exc).__name__}: {exc}", level="warn"
            )
            continue
        reporter = WandbReporter(reporter, init, secret)
    return reporter
