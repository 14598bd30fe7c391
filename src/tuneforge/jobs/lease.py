"""A job process's hold on its job: the lease check every write goes through, and failing a job.

A worker claims a job by writing itself into `lease_owner`; whoever writes for that job (the
worker, its runner child) re-reads the row first and stops with `LeaseLost` when another worker
owns it now, so an expired lease never leads to two writers.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.domain import events as ev
from tuneforge.domain.states import Status, transition
from tuneforge.store.tables import Job

# The runner's exit code for "the job is not finished and not mine to finish: give it back" (its
# executor failed; it already recorded why): the worker releases the lease without a crash event.
EXIT_GIVEN_BACK = 75  # EX_TEMPFAIL


class LeaseLost(Exception):
    """Another worker owns the job now (our lease expired): write nothing more."""


def owned_job(s: Session, job_id: str, owner: str) -> Job:
    stmt = select(Job).where(Job.id == job_id)
    if s.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    job = s.scalar(stmt)
    if job is None or job.lease_owner != owner:
        raise LeaseLost(job_id)
    return job


def fail_job(s: Session, job: Job, code: str, message: str, param: str | None = None) -> None:
    """Fail `job` with an error and the matching error event (same message, as OpenAI does)."""
    transition(job, Status.FAILED)
    job.error = {"code": code, "message": message, "param": param}
    ev.add_event(s, job.id, message, level="error")
