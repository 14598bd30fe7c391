"""The job state machine: every status change goes through `transition`, which refuses illegal moves.

    validating_files → queued → running → succeeded | failed | cancelled
                                   ↕ paused (pause: running → paused; resume: paused → queued)
    cancel: from any non-terminal status; failed: from any non-terminal status.

`running → queued` exists for one case: a worker gives a job back (its child died) within the
attempt bound, so the next claim resumes it from its saved state.
"""

from __future__ import annotations

from enum import Enum

from sqlalchemy.orm import object_session

from tuneforge.errors import InvalidRequest
from tuneforge.ids import now
from tuneforge.integrations.outbox import on_job_finished
from tuneforge.store.tables import Job


class Status(str, Enum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.VALIDATING_FILES: frozenset({Status.QUEUED, Status.FAILED, Status.CANCELLED}),
    Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED}),
    Status.RUNNING: frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.PAUSED, Status.QUEUED}
    ),
    Status.PAUSED: frozenset({Status.QUEUED, Status.FAILED, Status.CANCELLED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class IllegalTransition(InvalidRequest):
    """A 400: the job's current status does not allow the requested change."""

    def __init__(self, job_id: str, current: Status, target: Status):
        super().__init__(
            f"Cannot move fine-tuning job {job_id} from status '{current.value}' to '{target.value}'.",
            param="fine_tuning_job_id",
            code="invalid_job_status",
        )
        self.current = current
        self.target = target


def can_transition(current: Status | str, target: Status | str) -> bool:
    return Status(target) in ALLOWED[Status(current)]


def transition(job: Job, target: Status | str, *, at: int | None = None) -> None:
    """Move `job` (a row in the caller's session) to `target`, keeping the dependent fields
    consistent: finished_at on terminal states, estimated_finish only while running, the lease
    and any pending request cleared when nobody runs the job any more."""
    target = Status(target)
    current = Status(job.status)
    if target not in ALLOWED[current]:
        raise IllegalTransition(job.id, current, target)
    ts = at if at is not None else now()
    job.status = target.value
    job.updated_at = ts
    if target is Status.RUNNING:
        if job.started_at is None:
            job.started_at = ts
    else:
        job.estimated_finish = None
    if target in TERMINAL:
        job.finished_at = ts
    if target is not Status.RUNNING:
        # Nobody runs a job in any other status: free the lease and forget pending requests.
        job.requested_action = None
        job.lease_owner = None
        job.lease_expires_at = None
    if target is not Status.FAILED:
        job.error = None
    if target in TERMINAL and (session := object_session(job)) is not None:
        on_job_finished(session, job)  # webhooks/e-mail outbox rows, in this same transaction
