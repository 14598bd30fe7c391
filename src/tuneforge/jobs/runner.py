"""The child process that trains one job: `python -m tuneforge.jobs.runner JOB_ID --owner OWNER`.

The worker claims the job (its lease, its heartbeat) and starts this process; everything the run
produces is written here, through its own engine: the running status, events, metrics,
checkpoints, and the outcome (succeeded with the model and result file, paused, cancelled, or
failed with an error). A crash here (kill -9, OOM) leaves the job `running`; the worker sees the
exit code and gives the job back or fails it (see worker.py), so nobody ever waits on a dead run.

Where the trainer itself runs is the executor's business (executors.py: in this process, or on
a Ray cluster); when that machinery fails (ExecutorLost) the runner records why, leaves the job
`running` and exits with EXIT_GIVEN_BACK: the worker gives the lease back and the next claim
resumes the job from its saved state, as after a crash.

Settings come from the environment (TUNEFORGE_*), which the worker sets from its own Settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.domain import events as ev
from tuneforge.domain import naming
from tuneforge.domain.states import Status, transition
from tuneforge.errors import TuneforgeError
from tuneforge.ids import new_id, now
from tuneforge.jobs import job_state
from tuneforge.jobs.executors import ExecutorLost, Trained, executor_for
from tuneforge.jobs.lease import EXIT_GIVEN_BACK, LeaseLost, fail_job
from tuneforge.jobs.lease import owned_job as _owned_job
from tuneforge.jobs.reporter import DbReporter
from tuneforge.logs import configure as configure_logging
from tuneforge.services.files import on_outcome
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import BlobStore, open_blobs
from tuneforge.store.db import make_engine, make_sessionmaker, transaction
from tuneforge.store.tables import File, Job, JobCheckpoint, Project

log = logging.getLogger("tuneforge.jobs.runner")


def _file_path(blobs: BlobStore, s: Session, project_id: str, file_id: str | None, dest: Path) -> Path | None:
    """The file's bytes as a local file for the trainer: the blob itself on local disk, else a
    copy in the job's directory (`dest`), downloaded once per run."""
    if file_id is None:
        return None
    row = s.scalar(select(File).where(File.id == file_id, File.project_id == project_id))
    if row is None or not blobs.exists(row.blob_key):
        raise TuneforgeError(f"The file {file_id} no longer exists.", code="file_not_found")
    return blobs.fetch(row.blob_key, dest)


def run_job(settings: Settings, job_id: str, owner: str) -> int:
    settings = settings.resolved()
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    try:
        return _run(settings, factory, job_id, owner)
    except LeaseLost:
        log.warning("job %s: lease lost; another worker owns it now", job_id)
        return 0
    finally:
        engine.dispose()


def _run(settings: Settings, factory: sessionmaker[Session], job_id: str, owner: str) -> int:
    """Claimed job -> running -> trained -> its outcome, in steps that other methods reuse."""
    blobs = open_blobs(settings)
    with transaction(factory) as s:
        job = _owned_job(s, job_id, owner)
        if not _start(s, job):
            return 0
        try:
            # With Ray the state is brought where the ranks train, not to this driver.
            spec, start = build_spec(settings, s, blobs, job, restore_state=settings.executor == "local")
        except TuneforgeError as exc:
            fail_job(s, job, exc.code or "invalid_request", exc.message, exc.param)
            job_state.drop(s, blobs, job)
            return 0
        project = s.get(Project, job.project_id)
        reporter = DbReporter(
            factory,
            job_id=job.id,
            owner=owner,
            project_id=job.project_id,
            project_name=project.name,
            model=job.model,
            suffix=job.suffix,
            fallback_base=start.attach_base,
            loaded_base=start.base_model,
            blobs=blobs,
            job_dir=settings.jobs_dir / job.id,
            hold_at_step=settings.test_hold_at_step,
        )
    try:
        trained = _train(settings, factory, job, spec, reporter, owner, blobs)
    except ExecutorLost as exc:
        log.warning("job %s: %s; giving it back", job_id, exc)
        with transaction(factory) as s:
            _owned_job(s, job_id, owner)
            ev.add_event(s, job_id, f"{exc}; the job will resume from its last saved state", level="warn")
        return EXIT_GIVEN_BACK
    if trained is not None:
        # The final model was published where it was written, before the transaction that
        # makes it servable; it goes again if that transaction does not commit.
        final_key, results = trained.final_key, trained.results_blob
        with transaction(factory) as s:
            if final_key is not None:
                on_outcome(s, rolled_back=lambda: blobs.delete_dir(final_key))
            if results is not None:
                on_outcome(s, rolled_back=lambda: blobs.delete(results.key))
            _record_outcome(s, blobs, _owned_job(s, job_id, owner), trained, reporter)
    return 0


def _start(s: Session, job: Job) -> bool:
    """Move the job to running (first start, continue or resume); False when there is nothing to
    train (already final, or a cancel/pause/requeue that arrived while it was not running)."""
    if job.status not in (Status.QUEUED.value, Status.RUNNING.value):
        return False
    if job.requested_action == "cancel":
        transition(job, Status.CANCELLED)
        ev.add_event(s, job.id, ev.CANCELLED, level="warn")
        return False
    if job.status == Status.RUNNING.value:
        if job.requested_action == "pause":  # paused while its last run died
            transition(job, Status.PAUSED)
            ev.add_event(s, job.id, ev.PAUSED)
            return False
        if job.requested_action == "requeue":  # the worker is stopping: nothing to save
            transition(job, Status.QUEUED)
            ev.add_event(s, job.id, ev.REQUEUED)
            return False
        job.requested_action = None
        ev.add_event(
            s, job.id, f"Resuming the job from its last saved state (attempt {job.attempts})", level="warn"
        )
    else:
        first = job.started_at is None
        transition(job, Status.RUNNING)
        if first:
            ev.add_event(s, job.id, ev.STARTED, data=None)
        else:  # after a pause or a worker restart: training continues from state/
            ev.add_event(s, job.id, ev.CONTINUED)
    return True


def build_spec(settings: Settings, s: Session, blobs: BlobStore, job: Job, *, restore_state: bool = True):
    """-> (TrainSpec, where it starts from); TuneforgeError when an input is gone. With
    `restore_state`, the job's saved state is brought here first when it was saved elsewhere.
    (A Ray worker builds its own with this, on its machine: ray_executor.py.)"""
    from tuneforge.training import hparams
    from tuneforge.training.spec import TrainSpec

    start = ModelResolver(settings, blobs).training_start(s, job)
    if restore_state and job_state.restore(s, blobs, job, settings.jobs_dir / job.id):
        log.info("job %s: its state of step %s was downloaded from the blob store", job.id, job.state_step)
    inputs = settings.jobs_dir / job.id / "inputs"
    training = _file_path(blobs, s, job.project_id, job.training_file, inputs / "training.jsonl")
    validation = _file_path(blobs, s, job.project_id, job.validation_file, inputs / "validation.jsonl")
    spec = TrainSpec(
        base_model=start.base_model,
        training_file=training,
        validation_file=validation,
        output_dir=settings.jobs_dir / job.id,
        seed=job.seed,
        init_adapter=start.init_adapter,
        method=_method(settings, job, start.init_adapter),
        method_type=job.method.get("type", "supervised"),
        hyperparameters=hparams.requested(job.method),
        gradient_checkpointing=settings.train_gradient_checkpointing,
        torch_compile=settings.train_torch_compile,
        threads=settings.train_threads,
    )
    return spec, start


def _method(settings: Settings, job: Job, init_adapter: Path | None) -> Literal["lora", "full"]:
    """Every weight where the operator says so for this job's base (Settings.full_fine_tune_models);
    LoRA otherwise, and always when the job continues a LoRA fine-tune (its adapter is the start)."""
    wanted = set(settings.full_fine_tune_models)
    if init_adapter is None and {naming.base_of(job.model), naming.base_of(job.base_model)} & wanted:
        return "full"
    return "lora"


def _train(
    settings: Settings,
    factory: sessionmaker[Session],
    job: Job,
    spec,
    reporter: DbReporter,
    owner: str,
    blobs: BlobStore,
) -> Trained | None:
    """Run the trainer; its failure becomes the job's error (never a hang) and None is returned.
    ExecutorLost (the machinery running it failed, not the training) goes up to `_run`."""
    try:
        return executor_for(settings, factory).train(job, spec, reporter)
    except ExecutorLost:
        raise
    except Exception as exc:
        log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        if isinstance(exc, TuneforgeError):
            code, message, param = exc.code or "training_failed", exc.message, exc.param
        else:
            code, param = "training_failed", None
            message = f"The job failed during training: {type(exc).__name__}: {exc}"
        with transaction(factory) as s:
            failed = _owned_job(s, job.id, owner)
            fail_job(s, failed, code, message, param)
            job_state.drop(s, blobs, failed)
        return None


def _record_outcome(s: Session, blobs: BlobStore, job: Job, trained: Trained, reporter: DbReporter) -> None:
    """The trainer's result -> the job's state: cancelled, requeued, paused or succeeded."""
    result = trained.result
    if result.status == "cancelled":
        transition(job, Status.CANCELLED)
        ev.add_event(s, job.id, ev.CANCELLED, level="warn")
        job_state.drop(s, blobs, job)
    elif result.status == "paused" and job.requested_action == "requeue":
        transition(job, Status.QUEUED)  # the worker stopped: the next claim continues
        job.attempts = 0
        ev.add_event(s, job.id, ev.REQUEUED)
    elif result.status == "paused":
        transition(job, Status.PAUSED)
        ev.add_event(s, job.id, ev.PAUSED)
    else:
        _succeed(s, blobs, job, trained, reporter)
        job_state.drop(s, blobs, job)


def _succeed(s: Session, blobs: BlobStore, job: Job, trained: Trained, reporter: DbReporter) -> None:
    from tuneforge.services.files import add_file_row, publishing

    assert trained.final_key is not None and trained.results_blob is not None
    result, meta = trained.result, trained.final_meta
    name = reporter.final_name
    ckpt = s.scalar(
        select(JobCheckpoint).where(JobCheckpoint.job_id == job.id, JobCheckpoint.step_number == result.steps)
    )
    if ckpt is None:  # the trainer did not report the last epoch as a checkpoint: record it
        metrics = {k: float(v) for k, v in (meta.get("metrics") or {}).items() if isinstance(v, int | float)}
        ckpt = JobCheckpoint(
            id=new_id("ftckpt_"),
            job_id=job.id,
            created_at=now(),
            step_number=result.steps,
            fine_tuned_model_checkpoint=name,
            metrics={"step": float(result.steps), **metrics},
        )
        s.add(ckpt)
    # (the base resolved where the model was written: its local path there means nothing here)
    s.add(reporter.model_row(name, ckpt.id, meta, trained.final_key, base_model=trained.base_model))
    blob = trained.results_blob
    with publishing(s, lambda: blobs.delete(blob.key)):
        results = add_file_row(
            s, project_id=job.project_id, filename="step_metrics.csv", purpose="fine-tune-results", blob=blob
        )
    ev.add_event(s, job.id, ev.model_created(name))
    ev.add_event(s, job.id, ev.COMPLETED)
    transition(job, Status.SUCCEEDED)
    job.fine_tuned_model = name
    job.trained_tokens = int(result.trained_tokens)
    job.result_files = [results.id]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneforge.jobs.runner")
    parser.add_argument("job_id")
    parser.add_argument("--owner", required=True)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, process="runner")
    return run_job(settings, args.job_id, args.owner)


if __name__ == "__main__":
    sys.exit(main())
