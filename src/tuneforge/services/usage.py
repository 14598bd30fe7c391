"""Usage: inference usage records and the per-period report (per project and model) behind
GET /v1/usage and `tuneforge usage`. Prices and the cost rule are `tuneforge.pricing`.

Training tokens are the jobs' own `trained_tokens` (what the trainer counted: every token of the
examples, truncated to the context limit, x epochs), counted in the period the job finished in,
at the job's cost (`pricing.training_cost`: the price it was quoted, `jobs.training_price`).
Inference tokens are one `usage_records` row per completed request, written by the serving
path through `record_inference`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.errors import InvalidRequest
from tuneforge.ids import now
from tuneforge.pricing import inference_cost, training_cost
from tuneforge.services import ratelimit
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job, Project, UsageRecord

log = logging.getLogger("tuneforge.usage")

GroupBy = Literal["project", "model", "project_model"]
GROUP_BYS = ("project", "model", "project_model")


# ---- recording ---------------------------------------------------------------------------------
def record_inference(
    factory: sessionmaker[Session],
    *,
    project_id: str,
    key_id: str | None,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    """One row per completed request (one short insert), and the tokens go to the caller's
    tokens-per-minute budget. Never raises: a usage hiccup must not fail a served answer."""
    ratelimit.charge_current(prompt_tokens + completion_tokens)
    try:
        with transaction(factory) as s:
            s.add(
                UsageRecord(
                    created_at=now(),
                    project_id=project_id,
                    key_id=key_id,
                    model=model,
                    prompt_tokens=int(prompt_tokens),
                    completion_tokens=int(completion_tokens),
                )
            )
    except Exception:  # noqa: BLE001
        log.exception("could not record usage for project %s model %s", project_id, model)


async def record_inference_async(factory: sessionmaker[Session], **fields: Any) -> None:
    """`record_inference` from async code (the serving path): the insert runs in a thread, with
    the request's context, so the tokens still reach the caller's rate-limit account."""
    await asyncio.to_thread(record_inference, factory, **fields)


# ---- the report ----------------------------------------------------------------------------------
@dataclass
class UsageLine:
    project: str | None
    model: str | None
    jobs: int = 0
    trained_tokens: int = 0
    training_cost: float = 0.0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    inference_cost: float = 0.0

    @property
    def total_cost(self) -> float:
        return round(self.training_cost + self.inference_cost, 6)

    def add(self, other: UsageLine) -> None:
        self.jobs += other.jobs
        self.trained_tokens += other.trained_tokens
        self.training_cost = round(self.training_cost + other.training_cost, 6)
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.inference_cost = round(self.inference_cost + other.inference_cost, 6)


@dataclass
class UsageReport:
    start_time: int
    end_time: int
    group_by: str
    lines: list[UsageLine] = field(default_factory=list)
    totals: UsageLine = field(default_factory=lambda: UsageLine(None, None))


def report(
    session: Session,
    settings: Settings,
    *,
    start_time: int | None = None,
    end_time: int | None = None,
    group_by: str = "project_model",
    project_id: str | None = None,
) -> UsageReport:
    """Usage in [start_time, end_time) (default: the last 30 days up to now), for one project or
    all of them, grouped per project, per model, or per project and model."""
    end = end_time if end_time is not None else now() + 1
    start = start_time if start_time is not None else end - 30 * 86400
    if group_by not in GROUP_BYS:
        raise InvalidRequest(
            f"Invalid group_by {group_by!r}: expected one of {', '.join(GROUP_BYS)}.", param="group_by"
        )
    if start >= end:
        raise InvalidRequest("start_time must be before end_time.", param="start_time")
    cells: dict[tuple[str, str], UsageLine] = {}

    def cell(project: str, model: str) -> UsageLine:
        return cells.setdefault((project, model), UsageLine(project, model))

    jobs = (
        select(Project.name, Job.model, Job.trained_tokens, Job.training_price)
        .join(Project, Project.id == Job.project_id)
        .where(Job.trained_tokens.is_not(None), Job.finished_at >= start, Job.finished_at < end)
    )
    records = (
        select(
            Project.name,
            UsageRecord.model,
            func.count(),
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.completion_tokens),
        )
        .join(Project, Project.id == UsageRecord.project_id)
        .where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
        .group_by(Project.name, UsageRecord.model)
    )
    if project_id is not None:
        jobs = jobs.where(Job.project_id == project_id)
        records = records.where(UsageRecord.project_id == project_id)
    for project, model, tokens, job_price in session.execute(jobs):
        line = cell(project, model)
        line.jobs += 1
        line.trained_tokens += int(tokens or 0)
        line.training_cost = round(line.training_cost + (training_cost(tokens, job_price) or 0), 6)
    for project, model, n, prompt, completion in session.execute(records):
        line = cell(project, model)
        line.requests += int(n)
        line.prompt_tokens += int(prompt or 0)
        line.completion_tokens += int(completion or 0)
        line.inference_cost = inference_cost(settings, model, line.prompt_tokens, line.completion_tokens)

    grouped: dict[tuple[str | None, ...], UsageLine] = defaultdict(lambda: UsageLine(None, None))
    for (project, model), line in sorted(cells.items()):
        key = {"project": (project,), "model": (model,), "project_model": (project, model)}[group_by]
        out = grouped[key]
        out.project = project if group_by != "model" else None
        out.model = model if group_by != "project" else None
        out.add(line)
    result = UsageReport(start_time=start, end_time=end, group_by=group_by, lines=list(grouped.values()))
    for line in result.lines:
        result.totals.add(line)
    return result
