"""Where a job's training runs (Settings.executor), chosen here and nowhere else.

Either way a worker claims the job, heartbeats it and starts the runner (runner.py), which owns
the job's states from start to outcome; only the call that trains differs:
- `local` (default): the trainer runs in the runner process itself;
- `ray`: the runner is a Ray driver and the trainer runs as Ray Train workers on the cluster,
  data-parallel (ray_executor.py). Ray is imported only then.

An executor whose machinery fails (a Ray worker or node died: not the training itself) raises
`ExecutorLost`; the runner gives the job back, and the next claim resumes it from its last saved
state, as after a crashed local run (and fails it after Settings.job_max_attempts runs).
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.jobs.reporter import DbReporter
from tuneforge.store.tables import Job
from tuneforge.training.spec import TrainResult, TrainSpec


class ExecutorLost(Exception):
    """The run stopped because what ran it failed; the message says what, for the job's events."""


class Executor(Protocol):
    def train(self, job: Job, spec: TrainSpec, reporter: DbReporter) -> TrainResult:
        """Train `spec` for `job` (claimed by this runner's worker), reporting through `reporter`
        (or an identical one built where the training runs)."""
        ...


class LocalExecutor:
    def __init__(self, settings: Settings):
        self.settings = settings

    def train(self, job: Job, spec: TrainSpec, reporter: DbReporter) -> TrainResult:
        from tuneforge.integrations.wandb import with_integrations
        from tuneforge.training import train  # the trainer of spec.method_type (sft.py, dpo.py)

        result: TrainResult = train(spec, with_integrations(self.settings, job, spec, reporter))  # + W&B
        return result


def executor_for(settings: Settings, factory: sessionmaker[Session]) -> Executor:
    if settings.executor == "ray":
        from tuneforge.jobs.ray_executor import RayExecutor

        return RayExecutor(settings, factory)
    return LocalExecutor(settings)
