"""Job events: OpenAI's message templates (openai-api.md §3.2) and the one function that records one.

Both the API process (create, cancel, resume) and the worker's child (training progress) write
events; keeping the texts here keeps the sequence identical whoever emits it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tuneforge.ids import new_id, now
from tuneforge.store.tables import JobEvent

EMPTY: dict[str, Any] = {}


def created(job_id: str) -> str:
    return f"Created fine-tuning job: {job_id}"


def validating(training_file: str, validation_file: str | None) -> str:
    if validation_file:
        return f"Validating training file: {training_file} and validation file: {validation_file}"
    return f"Validating training file: {training_file}"


VALIDATED = "Files validated, moving job to queued state"
STARTED = "Fine-tuning job started"
COMPLETED = "The job has successfully completed"
CANCELLED = "Fine-tuning job was cancelled"
PAUSE_REQUESTED = "Pause requested; the job will pause at the next step"
PAUSED = "Fine-tuning job paused; resume it to continue from the saved state"
CONTINUED = "Fine-tuning job continues from its saved state"
REQUEUED = "The worker stopped; the job saved its state and is back in the queue"
RESUMED = "Fine-tuning job resumed, moving job to queued state"


def metrics_message(data: dict[str, Any]) -> str:
    msg = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.2f}"
    if data.get("valid_loss") is not None:
        msg += f", validation loss={data['valid_loss']:.2f}"
    if data.get("full_valid_loss") is not None:
        msg += f", full validation loss={data['full_valid_loss']:.2f}"
    return msg


def checkpoint_created(step: int, name: str) -> str:
    return f"Checkpoint created at step {step} with Snapshot ID: {name}"


def model_created(name: str) -> str:
    return f"New fine-tuned model created: {name}"


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = EMPTY,
) -> JobEvent:
    """Record one event (in the caller's transaction). `data` defaults to `{}` like OpenAI's."""
    event = JobEvent(
        id=new_id("ftevent-"),
        job_id=job_id,
        created_at=now(),
        level=level,
        type=type,
        message=message,
        data=dict(data) if data is not None else None,
    )
    session.add(event)
    return event
