"""A job's resumable state in a remote blob store, so that a run on another machine resumes it.

The trainer saves its state into the job's directory on the machine it runs on (`state/` and the
files beside it that a resumed run reads: training/spec.RESUME_FILES). Where the blob store is
remote (S3), every save is also published (`publish`, through the reporter's `state_saved`
hook, on the rank that wrote it):
- the files are uploaded under a new key (`put_dir`: its manifest last, so a half-uploaded state
  is never found: a reader only follows a key the database points at, and downloads by manifest);
- then the job's row points at it (`jobs.state_key`, `state_step`), written only while this run
  holds the job's lease, and the previous state is deleted once that commit is done: one state
  per job is kept.
A run whose job directory lacks that state, or holds an older one (it last ran elsewhere),
downloads it first (`restore`); one whose own state is as new uses it as it is.

With a local blob store every worker shares the data directory (the blobs are under it), so the
state stays where the trainer wrote it and nothing is copied. A job that ends drops its state
(`drop` when the runner closes it; `sweep_ended` for other ways to end, e.g. a cancel of a
paused job through the API).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.domain.states import TERMINAL
from tuneforge.jobs.lease import LeaseLost, owned_job
from tuneforge.services.files import on_outcome
from tuneforge.store.blobs import BlobStore
from tuneforge.store.db import transaction
from tuneforge.store.tables import FineTunedModel, Job, JobCheckpoint
from tuneforge.training.spec import RESUME_FILES

log = logging.getLogger("tuneforge.jobs.job_state")

PREFIX = "states"  # blob keys of published states
STATE = RESUME_FILES[0]
LOCK = ".state.lock"


def local_step(output_dir: Path) -> int:
    """The step of the state saved in `output_dir` on this machine, -1 when there is none."""
    try:
        return int(json.loads((output_dir / STATE / "progress.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


# ---- publishing (the rank that saved the state) ---------------------------------------------------
def publish(
    blobs: BlobStore, factory: sessionmaker[Session], *, job_id: str, owner: str, output_dir: Path, step: int
) -> None:
    if not blobs.remote:
        return
    stage = Path(tempfile.mkdtemp(dir=output_dir, prefix=".publish-"))
    try:
        _stage(output_dir, stage)
        key = blobs.put_dir(stage, PREFIX)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    try:
        with transaction(factory) as s:
            job = owned_job(s, job_id, owner)  # a run that lost its job publishes nothing
            old = job.state_key
            job.state_key, job.state_step = key, step
            on_outcome(
                s,
                committed=(lambda: blobs.delete_dir(old)) if old else None,
                rolled_back=lambda: blobs.delete_dir(key),
            )
    except LeaseLost:
        blobs.delete_dir(key)
        log.warning("job %s: lease lost; its state of step %d is not published", job_id, step)


def _stage(output_dir: Path, stage: Path) -> None:
    """The resume files as one directory to upload: state/ hard-linked (the trainer never rewrites
    a file there, it replaces the directory), the rest copied (step_metrics.csv grows as it goes)."""
    for name in RESUME_FILES:
        src = output_dir / name
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    dest = stage / name / f.relative_to(src)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(f, dest)
                    except OSError:
                        shutil.copy2(f, dest)
        elif src.is_file():
            shutil.copy2(src, stage / name)


# ---- restoring (every rank, where it runs, before training) ---------------------------------------
def restore(s: Session, blobs: BlobStore, job: Job, output_dir: Path) -> bool:
    """Bring the job's published state into `output_dir` unless the state there is as new;
    True when it was downloaded."""
    if not blobs.remote or job.state_key is None or job.state_step is None:
        return False
    if local_step(output_dir) >= job.state_step:
        return False
    output_dir.mkdir(parents=True, exist_ok=True)
    with _locked(output_dir):  # the ranks of a run on one machine share its directory
        if local_step(output_dir) >= job.state_step:
            return False
        fetched = blobs.fetch_dir(job.state_key, output_dir / f".restore-{secrets.token_hex(4)}")
        try:
            # state/ last: until it is in place, this directory still reads as "no newer state".
            for name in (*RESUME_FILES[1:], STATE):
                if (fetched / name).exists():
                    _replace(fetched / name, output_dir / name)
        finally:
            shutil.rmtree(fetched, ignore_errors=True)
        _placeholders(s, job, output_dir)
    return True


def _replace(src: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    if target.exists():
        os.rename(target, old)
    os.rename(src, target)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _placeholders(s: Session, job: Job, output_dir: Path) -> None:
    """An empty checkpoints/step-N for each servable checkpoint saved on another machine: the
    trainer counts the checkpoints it keeps from that directory, so the oldest is still removed
    (through the reporter: row and blob) once more than it keeps exist. The final model's row
    has no servable checkpoint of its own, so a placeholder never stands for the last step."""
    steps = s.scalars(
        select(JobCheckpoint.step_number)
        .join(FineTunedModel, FineTunedModel.checkpoint_id == JobCheckpoint.id)
        .where(JobCheckpoint.job_id == job.id)
    ).all()
    for step in steps:
        (output_dir / "checkpoints" / f"step-{step:06d}").mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _locked(output_dir: Path) -> Iterator[None]:
    with open(output_dir / LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- dropping (the job ended) ---------------------------------------------------------------------
def drop(s: Session, blobs: BlobStore, job: Job) -> None:
    """Forget the job's published state; its blobs go once the transaction commits."""
    key = job.state_key
    job.state_key = job.state_step = None
    if key is not None:
        on_outcome(s, committed=lambda: blobs.delete_dir(key))


def sweep_ended(factory: sessionmaker[Session], blobs: BlobStore) -> int:
    """Drop the published state of every job that ended without its runner (a paused job
    cancelled through the API, a job failed by its worker); -> how many."""
    with transaction(factory) as s:
        jobs = s.scalars(
            select(Job).where(Job.state_key.is_not(None), Job.status.in_([t.value for t in TERMINAL]))
        ).all()
        for job in jobs:
            drop(s, blobs, job)
        return len(jobs)
