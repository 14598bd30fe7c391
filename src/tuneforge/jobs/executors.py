"""Where a job's training runs (Settings.executor), chosen here and nowhere else.

Either way a worker claims the job, heartbeats it and starts the runner (runner.py), which owns
the job's states from start to outcome; only the call that trains differs:
- `local` (default): the trainer runs in the runner process itself;
- `ray`: the runner is a Ray driver and the trainer runs as Ray Train workers on the cluster,
  data-parallel (ray_executor.py). Ray is imported only then.

What a finished run produced is published where it ran, by the process that wrote it (`publish`:
the final model and the result file into the blob store), so the runner never reads the disk of
the machine that trained (a Ray worker's may be another machine's).

An executor whose machinery fails (a Ray worker or node died: not the training itself) raises
`ExecutorLost`; the runner gives the job back, and the next claim resumes it from its last saved
state, as after a crashed local run (and fails it after Settings.job_max_attempts runs).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.jobs.reporter import DbReporter, read_meta
from tuneforge.services.files import BLOB_PREFIX
from tuneforge.store.blobs import Blob
from tuneforge.store.tables import Job
from tuneforge.training.spec import TrainResult, TrainSpec


class ExecutorLost(Exception):
    """The run stopped because what ran it failed; the message says what, for the job's events."""


@dataclass
class Trained:
    """A run's result and, when it succeeded, what it published where it ran."""

    result: TrainResult
    final_key: str | None = None  # the final model directory's blob key
    final_meta: dict[str, Any] = field(default_factory=dict)  # its tuneforge.json
    base_model: str | None = None  # what it attaches to, as the store records it
    results_blob: Blob | None = None  # step_metrics.csv, the job's result file


def publish(settings: Settings, reporter: DbReporter, result: TrainResult) -> Trained:
    """Publish a succeeded run's final model and step_metrics.csv (base64 where Settings say, as
    OpenAI serves it) from this machine; anything else is only its result."""
    if result.status != "succeeded" or result.final_dir is None:
        return Trained(result)
    blobs = reporter.blobs
    final_dir = Path(result.final_dir)
    meta = read_meta(final_dir)
    key = blobs.put_dir(final_dir)
    try:
        data = Path(result.metrics_csv).read_bytes()
        blob = blobs.write_chunks(
            [base64.b64encode(data) if settings.result_files_base64 else data], BLOB_PREFIX
        )
    except BaseException:
        blobs.delete_dir(key)
        raise
    return Trained(result, key, meta, reporter.base_of(meta), blob)


class Executor(Protocol):
    def train(self, job: Job, spec: TrainSpec, reporter: DbReporter) -> Trained:
        """Train `spec` for `job` (claimed by this runner's worker), reporting through `reporter`
        (or an identical one built where the training runs), and publish what it made there."""
        ...


class LocalExecutor:
    def __init__(self, settings: Settings):
        self.settings = settings

    def train(self, job: Job, spec: TrainSpec, reporter: DbReporter) -> Trained:
        from tuneforge.integrations.wandb import with_integrations
        from tuneforge.training import train  # the trainer of spec.method_type (sft.py, dpo.py)

        result: TrainResult = train(spec, with_integrations(self.settings, job, spec, reporter))  # + W&B
        return publish(self.settings, reporter, result)


def executor_for(settings: Settings, factory: sessionmaker[Session]) -> Executor:
    if settings.executor == "ray":
        from tuneforge.jobs.ray_executor import RayExecutor

        return RayExecutor(settings, factory)
    return LocalExecutor(settings)
