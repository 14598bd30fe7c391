"""What the dashboard pages show, read through the services; no FastAPI here.

Wire shapes come from `services.jobs.*_to_wire` and `protocol/`, so a page shows exactly what the
API returns. The only queries of its own are reads the API has no endpoint for (a status filter,
events after a cursor for live updates, the models a project can chat with).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.catalog import TINY_NAME
from tuneforge.domain import events as ev
from tuneforge.domain.states import TERMINAL, Status
from tuneforge.ids import now
from tuneforge.jobs.reporter import METRIC_KEYS as REPORTED_METRICS
from tuneforge.services import jobs as jobs_service
from tuneforge.services.keys import Principal
from tuneforge.store.pagination import paginate
from tuneforge.store.tables import FineTunedModel, Job, JobCheckpoint, JobEvent
from tuneforge.training import hparams

STATUSES = [s.value for s in Status]
LIVE_EVENTS_PAGE = 2000
# What the job page charts: every metric the trainers report (SFT and DPO), defined in the reporter
METRIC_KEYS = tuple(k for k in REPORTED_METRICS if k not in ("step", "total_steps"))


# ---- jobs list -------------------------------------------------------------------------------
def list_jobs(
    session: Session, principal: Principal, *, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    stmt = select(Job).where(Job.project_id == principal.project_id)
    if status:
        stmt = stmt.where(Job.status == status)
    page = paginate(session, stmt, sort=[Job.created_at, Job.id], limit=limit)
    return [
        {"job": jobs_service.job_to_wire(j, principal.organization_id), "duration": duration(j)}
        for j in page.items
    ]


def duration(job: Job) -> int | None:
    """Seconds of training so far (running) or in all (finished); None before it starts."""
    if job.started_at is None:
        return None
    end = job.finished_at if job.finished_at is not None else now()
    return max(0, end - job.started_at)


# ---- one job ---------------------------------------------------------------------------------
# Which event marks the job entering which stage of the timeline.
_STAGE_EVENTS = {
    ev.VALIDATED: "queued",
    ev.STARTED: "running",
    ev.CONTINUED: "running",
    ev.RESUMED: "queued",
    ev.PAUSED: "paused",
    ev.REQUEUED: "queued",
    ev.COMPLETED: "succeeded",
    ev.CANCELLED: "cancelled",
}


def timeline(session: Session, job: Job) -> list[dict[str, Any]]:
    """[{status, at}] in order: created, then each stage change the events record."""
    out = [{"status": "validating_files", "at": job.created_at}]
    rows = session.execute(
        select(JobEvent.message, JobEvent.level, JobEvent.created_at)
        .where(JobEvent.job_id == job.id, JobEvent.type == "message")
        .order_by(JobEvent.seq)
    )
    for message, level, at in rows:
        stage = _STAGE_EVENTS.get(message)
        if stage is None and level == "error":
            stage = "failed"
        if stage and stage != out[-1]["status"]:
            out.append({"status": stage, "at": at})
    if job.status == Status.FAILED.value and out[-1]["status"] != "failed":
        out.append({"status": "failed", "at": job.finished_at or job.updated_at})
    return out


def job_live(session: Session, principal: Principal, job_id: str, *, after: int = 0) -> dict[str, Any]:
    """Everything the job page refreshes: the job, events after sequence `after` (oldest first),
    the metric points among them, checkpoints, the timeline. Another project's job is a 404."""
    job = jobs_service.get_job(session, principal.project_id, job_id)
    events = list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job.id, JobEvent.seq > after)
            .order_by(JobEvent.seq)
            .limit(LIVE_EVENTS_PAGE)
        )
    )
    points = [metric_point(e.data) for e in events if e.type == "metrics" and e.data]
    ckpts = session.scalars(
        select(JobCheckpoint).where(JobCheckpoint.job_id == job.id).order_by(JobCheckpoint.step_number.desc())
    )
    return {
        "job": jobs_service.job_to_wire(job, principal.organization_id).model_dump(mode="json"),
        "requested_action": job.requested_action,
        "terminal": Status(job.status) in TERMINAL,
        "duration": duration(job),
        "timeline": timeline(session, job),
        "events": [{**jobs_service.event_to_wire(e).model_dump(mode="json"), "seq": e.seq} for e in events],
        "next": events[-1].seq if events else after,
        "more": len(events) == LIVE_EVENTS_PAGE,
        "points": [p for p in points if p is not None],
        "checkpoints": [jobs_service.checkpoint_to_wire(c).model_dump(mode="json") for c in ckpts],
    }


def metric_point(data: dict[str, Any]) -> dict[str, Any] | None:
    if not isinstance(data.get("step"), int):
        return None
    return {"step": data["step"], **{k: data[k] for k in METRIC_KEYS if data.get(k) is not None}}


def rerun_config(job: Job) -> dict[str, Any]:
    """The create form's prefill from a job: what was *requested* (`auto`s kept), not resolved."""
    method = job.method or {}
    hp = hparams.stored(method)
    return {
        "model": job.model,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "method": method.get("type", "supervised"),
        "hyperparameters": {
            d.name: hp.get(d.name, "auto") for d in hparams.definitions(method.get("type", "supervised"))
        },
        "suffix": job.suffix,
        "seed": job.seed,
        "metadata": job.metadata_ or {},
        "integrations": job.integrations or [],
    }


# ---- the create form -------------------------------------------------------------------------
def hyperparameter_fields() -> list[dict[str, Any]]:
    """The create form's hyperparameter inputs, one per definition (training/hparams.py), each
    marked with the methods that take it."""
    return [
        {
            "name": d.name,
            "label": d.label,
            "help": d.help,
            "methods": " ".join(m for m, defs in hparams.METHODS.items() if d in defs),
        }
        for d in hparams.all_definitions()
    ]


# Training methods the form offers: (value, label), exactly those the service trains
# (hparams.METHODS); a method without a label here shows its name.
METHOD_LABELS = {"supervised": "supervised (SFT)", "dpo": "dpo (preference pairs)"}
METHODS: list[tuple[str, str]] = [(m, METHOD_LABELS.get(m, m)) for m in hparams.METHODS]


def default_model(models: list[ChatModel]) -> str | None:
    """The model the form preselects: tuneforge-tiny, else the first configured base model; never
    a fine-tuned model (continuing a fine-tune is a deliberate choice)."""
    bases = [m.id for m in models if m.kind == "base"]
    return TINY_NAME if TINY_NAME in bases else (bases[0] if bases else None)


# ---- models for the playground ---------------------------------------------------------------
# What a picker says next to a model name, so nobody mistakes the test model's noise for a bug.
MODEL_NOTES = {TINY_NAME: "untrained test model"}


@dataclass(frozen=True)
class ChatModel:
    id: str
    kind: str  # "base" | "fine-tuned" | "checkpoint"
    job_id: str | None = None
    created_at: int | None = None

    @property
    def label(self) -> str:
        note = MODEL_NOTES.get(self.id)
        return f"{self.id} — {note}" if note else self.id


def chat_models(session: Session, principal: Principal, base_names: list[str]) -> list[ChatModel]:
    rows = session.scalars(
        select(FineTunedModel)
        .where(FineTunedModel.project_id == principal.project_id)
        .order_by(FineTunedModel.created_at.desc(), FineTunedModel.id)
    )
    tuned = [
        ChatModel(r.id, "checkpoint" if ":ckpt-step-" in r.id else "fine-tuned", r.job_id, r.created_at)
        for r in rows
    ]
    return tuned + [ChatModel(name, "base") for name in base_names]


# ---- files -----------------------------------------------------------------------------------
def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest


def preview(chunks: Iterable[bytes], n: int = 5, max_chars: int = 4000) -> list[dict[str, Any]]:
    """The first `n` non-blank lines of a file's bytes: parsed JSON when they are JSON, else the text."""
    out: list[dict[str, Any]] = []
    it = iter(chunks)
    try:
        for number, raw in enumerate(_lines(it), start=1):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text.strip():
                continue
            item: dict[str, Any] = {
                "line": number,
                "text": text[:max_chars],
                "truncated": len(text) > max_chars,
            }
            try:
                item["json"] = json.loads(text) if len(text) <= max_chars else None
            except ValueError:
                item["json"] = None
            out.append(item)
            if len(out) >= n:
                break
    finally:
        getattr(it, "close", lambda: None)()  # a stream from S3 is released at once
    return out
