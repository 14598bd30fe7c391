"""Fine-tuning jobs: create (every field checked synchronously), list, retrieve, cancel, pause,
resume, events, checkpoints. No FastAPI and no torch here; training happens in a worker.

Cancel and pause of a *running* job are requests: they are recorded on the row
(`requested_action`) and the worker's child acts on them within about a second, so these calls
return the job still `running` (its next retrieve shows `cancelled` / `paused`). Jobs that nobody
runs (validating_files, queued, paused) change status at once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.domain import events as ev
from tuneforge.domain.states import TERMINAL, Status, transition
from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.ids import new_id, now
from tuneforge.pricing import training_cost
from tuneforge.protocol.fine_tuning import (
    CreateFineTuningJobRequest,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    HyperparametersOut,
    JobError,
)
from tuneforge.services.files import get_file
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.pagination import Page, paginate
from tuneforge.store.tables import Job, JobCheckpoint, JobEvent
from tuneforge.training import hparams

MAX_SEED = 2_147_483_647
SUFFIX_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# ---- create ----------------------------------------------------------------------------------
def create_job(
    session: Session, project_id: str, req: CreateFineTuningJobRequest, *, resolver: ModelResolver
) -> Job:
    """Validate `req` and insert the job in `validating_files` with its first two events.

    The model name is checked here; it is resolved to weights later, in the worker, so creating a
    job never loads or builds a model.
    """
    model, base_ref = resolver.for_fine_tuning(session, project_id, req.model)
    _check_file(session, project_id, req.training_file, "training_file")
    if req.validation_file is not None:
        _check_file(session, project_id, req.validation_file, "validation_file")
    kind, hyperparameters = _check_method(req.method, req.hyperparameters)
    suffix = _check_suffix(req.suffix)
    seed = _check_seed(req.seed)
    metadata = _check_metadata(req.metadata)
    integrations = _check_integrations(req.integrations)

    ts = now()
    job = Job(
        id=new_id("ftjob-"),
        project_id=project_id,
        status=Status.VALIDATING_FILES.value,
        model=model,
        base_model=base_ref,
        training_file=req.training_file,
        validation_file=req.validation_file,
        method=hparams.method_object(kind, hyperparameters),
        suffix=suffix,
        seed=seed,
        metadata_=metadata,
        integrations=integrations,
        fine_tuned_model=None,
        trained_tokens=None,
        error=None,
        result_files=[],
        created_at=ts,
        started_at=None,
        finished_at=None,
        estimated_finish=None,
        requested_action=None,
        lease_owner=None,
        lease_expires_at=None,
        attempts=0,
        updated_at=ts,
    )
    session.add(job)
    session.flush()
    ev.add_event(session, job.id, ev.created(job.id))
    ev.add_event(session, job.id, ev.validating(job.training_file, job.validation_file))
    session.flush()
    return job


def _check_file(session: Session, project_id: str, file_id: Any, param: str) -> None:
    try:
        row = get_file(session, project_id, file_id) if isinstance(file_id, str) else None
    except NotFound:
        row = None
    if row is None or row.purpose != "fine-tune":
        raise InvalidRequest(f"invalid {param}: {file_id}", param=param, code=f"invalid_{param}")
    if row.status == "error":
        raise InvalidRequest(
            f"File '{file_id}' could not be processed and cannot be used for fine-tuning.",
            param=param,
            code=f"invalid_{param}",
        )


def _check_method(method: Any, top_level: Any) -> tuple[str, dict[str, Any]]:
    """(method type, its requested hyperparameters with `auto` kept) from `method` or the
    deprecated top level. The hyperparameters each method takes: hparams.METHODS."""
    if method is None:
        return "supervised", hparams.check("supervised", top_level, "hyperparameters")
    if not isinstance(method, Mapping):
        raise InvalidRequest("method must be an object.", param="method")
    kind = method.get("type")
    if kind == "reinforcement":
        raise InvalidRequest(
            f"Fine-tuning method '{kind}' is not supported yet; use 'supervised' or 'dpo'.",
            param="method.type",
            code="unsupported_method",
        )
    if kind not in hparams.METHODS:
        raise InvalidRequest(
            f"Invalid method.type {kind!r}: expected 'supervised', 'dpo' or 'reinforcement'.",
            param="method.type",
        )
    unknown = set(method) - {"type", kind}
    if unknown:
        raise InvalidRequest(
            f"Unexpected field(s) in method for type '{kind}': {', '.join(sorted(unknown))}.", param="method"
        )
    body = method.get(kind) or {}
    if not isinstance(body, Mapping) or set(body) - {"hyperparameters"}:
        raise InvalidRequest(
            f"method.{kind} must be an object with only 'hyperparameters'.", param=f"method.{kind}"
        )
    inner = body.get("hyperparameters")
    if top_level is not None and kind != "supervised":
        raise InvalidRequest(
            f"Top-level hyperparameters apply to supervised jobs only; set them "
            f"in method.{kind}.hyperparameters.",
            param="hyperparameters",
        )
    if inner is not None and top_level is not None:
        raise InvalidRequest(
            "Set hyperparameters either at the top level (deprecated) or in "
            "method.supervised.hyperparameters, not both.",
            param="hyperparameters",
        )
    if inner is None and kind == "supervised":
        return kind, hparams.check(kind, top_level, "hyperparameters")
    return kind, hparams.check(kind, inner, f"method.{kind}.hyperparameters")


def _check_suffix(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SUFFIX_RE.match(value):
        raise InvalidRequest(
            "suffix must be 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.'.", param="suffix"
        )
    return value


def _check_seed(value: Any) -> int:
    if value is None:
        return secrets.randbelow(MAX_SEED + 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InvalidRequest(
            f"Invalid seed {value!r}: expected an integer between 0 and {MAX_SEED}.", param="seed"
        )
    return value


def _check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest("metadata must be an object of string keys and values.", param="metadata")
    if len(value) > 16:
        raise InvalidRequest(f"metadata has {len(value)} pairs; at most 16 are allowed.", param="metadata")
    for k, v in value.items():
        if not isinstance(k, str) or not 1 <= len(k) <= 64:
            raise InvalidRequest(
                f"metadata key {k!r} must be a string of 1 to 64 characters.", param="metadata"
            )
        if not isinstance(v, str) or len(v) > 512:
            raise InvalidRequest(
                f"metadata value for {k!r} must be a string of at most 512 characters.", param=f"metadata.{k}"
            )
    return dict(value)


def _check_integrations(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 5:
        raise InvalidRequest("integrations must be a list of at most 5 integrations.", param="integrations")
    out = []
    for i, item in enumerate(value):
        p = f"integrations[{i}]"
        if not isinstance(item, Mapping) or item.get("type") != "wandb":
            raise InvalidRequest(f"{p}.type must be 'wandb'.", param=f"{p}.type")
        wandb = item.get("wandb")
        if (
            not isinstance(wandb, Mapping)
            or not isinstance(wandb.get("project"), str)
            or not wandb["project"]
        ):
            raise InvalidRequest(f"{p}.wandb.project is required.", param=f"{p}.wandb.project")
        unknown = set(wandb) - {"project", "name", "entity", "tags"}
        if unknown:
            raise InvalidRequest(
                f"Unknown field(s) in {p}.wandb: {', '.join(sorted(unknown))}.", param=f"{p}.wandb"
            )
        for key in ("name", "entity"):
            if wandb.get(key) is not None and not isinstance(wandb[key], str):
                raise InvalidRequest(f"{p}.wandb.{key} must be a string.", param=f"{p}.wandb.{key}")
        tags = wandb.get("tags")
        if tags is not None and (
            not isinstance(tags, list)
            or len(tags) > 50
            or any(not isinstance(t, str) or not 1 <= len(t) <= 64 for t in tags)
        ):
            raise InvalidRequest(
                f"{p}.wandb.tags must be at most 50 strings of 1 to 64 characters.", param=f"{p}.wandb.tags"
            )
        out.append(
            {
                "type": "wandb",
                "wandb": {
                    "project": wandb["project"],
                    "name": wandb.get("name"),
                    "entity": wandb.get("entity"),
                    "tags": list(tags) if tags else None,
                },
            }
        )
    return out


# ---- read ------------------------------------------------------------------------------------
def get_job(session: Session, project_id: str, job_id: str, *, for_update: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id, Job.project_id == project_id)
    if for_update:
        stmt = stmt.with_for_update()
    job = session.scalar(stmt)
    if job is None:
        raise NotFound(
            f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="fine_tuning_job_not_found"
        )
    return job


def list_jobs(
    session: Session,
    project_id: str,
    *,
    after: str | None = None,
    limit: int = 20,
    metadata: dict[str, str] | None = None,
) -> Page[Job]:
    limit = _check_limit(limit)
    cursor = None
    if after is not None:
        cursor = session.scalar(select(Job).where(Job.id == after, Job.project_id == project_id))
        if cursor is None:
            raise InvalidRequest(f"Invalid 'after': no fine-tuning job {after}.", param="after")
    stmt = select(Job).where(Job.project_id == project_id)
    if not metadata:
        return paginate(session, stmt, sort=[Job.created_at, Job.id], after=cursor, limit=limit)
    # JSON predicates differ between SQLite and PostgreSQL; a project's job list is small, so the
    # metadata filter runs here, over the keyset-ordered rows after the cursor.
    items: list[Job] = []
    while True:
        page = paginate(session, stmt, sort=[Job.created_at, Job.id], after=cursor, limit=200)
        for job in page.items:
            if all((job.metadata_ or {}).get(k) == v for k, v in metadata.items()):
                items.append(job)
                if len(items) > limit:
                    return Page(items=items[:limit], has_more=True)
        if not page.has_more:
            return Page(items=items, has_more=False)
        cursor = page.items[-1]


def _job_cursor(
    session: Session, table: type[JobEvent] | type[JobCheckpoint], job_id: str, after: str | None, noun: str
) -> JobEvent | JobCheckpoint | None:
    """The row an `after` id names, which must belong to this job (else a 400 naming `after`)."""
    if after is None:
        return None
    cursor = cast(
        "JobEvent | JobCheckpoint | None",
        session.scalar(select(table).where(table.id == after, table.job_id == job_id)),
    )
    if cursor is None:
        raise InvalidRequest(f"Invalid 'after': no {noun} {after} in job {job_id}.", param="after")
    return cursor


def list_events(
    session: Session, project_id: str, job_id: str, *, after: str | None = None, limit: int = 20
) -> Page[JobEvent]:
    limit = _check_limit(limit)
    get_job(session, project_id, job_id)
    cursor = _job_cursor(session, JobEvent, job_id, after, "event")
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    return paginate(session, stmt, sort=[JobEvent.seq], after=cursor, limit=limit)


def list_checkpoints(
    session: Session, project_id: str, job_id: str, *, after: str | None = None, limit: int = 10
) -> Page[JobCheckpoint]:
    limit = _check_limit(limit)
    get_job(session, project_id, job_id)
    cursor = _job_cursor(session, JobCheckpoint, job_id, after, "checkpoint")
    stmt = select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)
    return paginate(
        session, stmt, sort=[JobCheckpoint.step_number, JobCheckpoint.id], after=cursor, limit=limit
    )


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= 10_000:
        raise InvalidRequest("limit must be between 1 and 10000.", param="limit")
    return limit


# ---- lifecycle -------------------------------------------------------------------------------
def cancel_job(session: Session, project_id: str, job_id: str) -> Job:
    job = get_job(session, project_id, job_id, for_update=True)
    status = Status(job.status)
    if status in TERMINAL:
        raise InvalidRequest(
            f"Job {job_id} has already {status.value} and cannot be cancelled.",
            param="fine_tuning_job_id",
            code="invalid_job_status",
        )
    if status is Status.RUNNING:
        job.requested_action = "cancel"  # the child stops within about a second
        job.updated_at = now()
        return job
    transition(job, Status.CANCELLED)
    ev.add_event(session, job.id, ev.CANCELLED, level="warn")
    return job


def pause_job(session: Session, project_id: str, job_id: str) -> Job:
    job = get_job(session, project_id, job_id, for_update=True)
    if job.status != Status.RUNNING.value:
        raise InvalidRequest(
            f"Only a running job can be paused; job {job_id} is {job.status}.",
            param="fine_tuning_job_id",
            code="invalid_job_status",
        )
    if job.requested_action == "cancel":
        raise InvalidRequest(
            f"Job {job_id} is being cancelled and cannot be paused.",
            param="fine_tuning_job_id",
            code="invalid_job_status",
        )
    if job.requested_action != "pause":
        job.requested_action = "pause"
        job.updated_at = now()
        ev.add_event(session, job.id, ev.PAUSE_REQUESTED)
    return job


def resume_job(session: Session, project_id: str, job_id: str) -> Job:
    job = get_job(session, project_id, job_id, for_update=True)
    if job.status == Status.RUNNING.value and job.requested_action == "pause":
        job.requested_action = None  # the pause has not happened yet: just withdraw it
        job.updated_at = now()
        return job
    if job.status != Status.PAUSED.value:
        raise InvalidRequest(
            f"Only a paused job can be resumed; job {job_id} is {job.status}.",
            param="fine_tuning_job_id",
            code="invalid_job_status",
        )
    transition(job, Status.QUEUED)
    job.attempts = 0  # a pause is a clean stop, not a failed attempt
    ev.add_event(session, job.id, ev.RESUMED)
    return job


# ---- wire ------------------------------------------------------------------------------------
def job_to_wire(job: Job, organization_id: str) -> FineTuningJob:
    running = job.status == Status.RUNNING.value
    eta = job.estimated_finish if running else None
    if eta is not None:
        # The estimate is written at each step; a job still running past it (saving its final
        # model, a slow step) finishes in the future at the earliest, never in the past.
        eta = max(eta, now() + 1)
    return FineTuningJob(
        id=job.id,
        created_at=job.created_at,
        error=JobError(**job.error) if job.status == Status.FAILED.value and job.error else None,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=job.finished_at,
        hyperparameters=_hyperparameters_out(job),
        model=job.model,
        organization_id=organization_id,
        result_files=list(job.result_files or []),
        seed=job.seed,
        status=job.status,
        trained_tokens=job.trained_tokens,
        training_file=job.training_file,
        validation_file=job.validation_file,
        estimated_finish=eta,
        integrations=job.integrations,
        metadata=job.metadata_,
        method=job.method,
        user_provided_suffix=job.suffix,
        estimated_trained_tokens=job.estimated_trained_tokens,
        estimated_cost=job.estimated_cost,
        cost=training_cost(job.trained_tokens, job.training_price),
    )


def _hyperparameters_out(job: Job) -> HyperparametersOut:
    # The deprecated top-level object: the method's values, for the names OpenAI lists there.
    values = hparams.stored(job.method)
    return HyperparametersOut(**{k: v for k, v in values.items() if k in HyperparametersOut.model_fields})


def event_to_wire(event: JobEvent) -> FineTuningJobEvent:
    return FineTuningJobEvent(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        type=event.type,
        data=event.data,
    )


def checkpoint_to_wire(ckpt: JobCheckpoint) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=ckpt.id,
        created_at=ckpt.created_at,
        fine_tuned_model_checkpoint=ckpt.fine_tuned_model_checkpoint,
        fine_tuning_job_id=ckpt.job_id,
        step_number=ckpt.step_number,
        metrics={k: float(v) for k, v in (ckpt.metrics or {}).items() if v is not None},
    )
