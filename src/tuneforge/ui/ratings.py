"""Playground ratings: store a person's judgement of side-by-side answers, export them as DPO data.

The export is OpenAI's preference format (openai-api.md §7.3), one pair per line:
`{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": ...}],
"non_preferred_output": [{"role": "assistant", "content": ...}]}`, saved as a File with purpose
`fine-tune` through services/files.py, so it is listed, downloaded and used like any upload.

`train_dpo` is the playground's one click: that export, then a DPO job on the rated model training
on it (the same `create_job` as POST /v1/fine_tuning/jobs, every hyperparameter `auto`).

Pairs: a picked favourite is preferred over every other answer; without a favourite, each
thumbs-up answer is preferred over each thumbs-down one. Identical texts make no pair.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tuneforge.errors import InvalidRequest
from tuneforge.ids import new_id, now
from tuneforge.protocol.fine_tuning import CreateFineTuningJobRequest
from tuneforge.services import files as files_service
from tuneforge.services import jobs as jobs_service
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import BlobStore
from tuneforge.store.tables import File, Job, PlaygroundRating
from tuneforge.training import hparams
from tuneforge.training.data import MIN_EXAMPLES
from tuneforge.ui.schemas import Comparison


def save_comparison(session: Session, project_id: str, comparison: Comparison) -> str:
    """Store (or replace, when re-rated) one comparison; returns its id."""
    if sum(a.preferred for a in comparison.answers) > 1:
        raise InvalidRequest("Pick at most one preferred answer.", param="answers")
    if not any(a.preferred or a.rating is not None for a in comparison.answers):
        raise InvalidRequest(
            "Rate at least one answer (thumbs up/down or pick the best one).", param="answers"
        )
    # time-ordered ids: the export lists comparisons in the order they were made
    cid = comparison.comparison_id or f"cmp_{time.time_ns() // 1000:014x}{new_id('', 12)}"
    session.execute(
        delete(PlaygroundRating).where(
            PlaygroundRating.project_id == project_id, PlaygroundRating.comparison_id == cid
        )
    )
    ts = now()
    messages = [m.model_dump() for m in comparison.messages]
    for answer in comparison.answers:
        session.add(
            PlaygroundRating(
                id=new_id("rating_"),
                project_id=project_id,
                comparison_id=cid,
                created_at=ts,
                messages=messages,
                params=comparison.params.model_dump(),
                model=answer.model,
                output=answer.output,
                rating=answer.rating,
                preferred=answer.preferred,
                completion_tokens=answer.completion_tokens,
                latency_ms=answer.latency_ms,
            )
        )
    session.flush()
    return cid


def count(session: Session, project_id: str) -> int:
    """Comparisons rated in this project."""
    return (
        session.scalar(
            select(func.count(func.distinct(PlaygroundRating.comparison_id))).where(
                PlaygroundRating.project_id == project_id
            )
        )
        or 0
    )


def preference_lines(session: Session, project_id: str) -> Iterator[dict]:
    rows = session.scalars(
        select(PlaygroundRating)
        .where(PlaygroundRating.project_id == project_id)
        .order_by(PlaygroundRating.created_at, PlaygroundRating.comparison_id, PlaygroundRating.id)
    )
    groups: dict[str, list[PlaygroundRating]] = defaultdict(list)
    for row in rows:
        groups[row.comparison_id].append(row)
    for answers in groups.values():
        best = [a for a in answers if a.preferred]
        if best:
            pairs = [(best[0], other) for other in answers if other is not best[0]]
        else:
            ups = [a for a in answers if a.rating == 1]
            downs = [a for a in answers if a.rating == -1]
            pairs = [(u, d) for u in ups for d in downs]
        for good, bad in pairs:
            if good.output == bad.output:
                continue
            yield {
                "input": {"messages": good.messages},
                "preferred_output": [{"role": "assistant", "content": good.output}],
                "non_preferred_output": [{"role": "assistant", "content": bad.output}],
            }


def export(session: Session, blobs: BlobStore, project_id: str) -> tuple[File, int]:
    """Write every preference pair of the project to a new `fine-tune` File -> (file, pairs)."""
    lines = _lines(session, project_id)
    if not lines:
        raise InvalidRequest(
            "Nothing to export yet: rate answers in the playground first (pick "
            "the best answer, or give thumbs up and thumbs down).",
            code="no_ratings",
        )
    return _write(session, blobs, project_id, lines), len(lines)


PLAYGROUND_SUFFIX = "playground-dpo"  # in the new model's name: ft:BASE:PROJECT:playground-dpo:ID
HYPERPARAMETERS_PARAM = "method.dpo.hyperparameters"  # as the jobs API names them


def train_dpo(
    session: Session,
    blobs: BlobStore,
    project_id: str,
    model: str,
    hyperparameters: dict[str, Any] | None = None,
    *,
    resolver: ModelResolver,
) -> tuple[Job, File, int]:
    """The ratings as a new preference file and a DPO job on `model` training on it ->
    (job, file, pairs). Too few pairs, an unknown model or a bad hyperparameter: a 400 before
    anything is written."""
    resolver.for_fine_tuning(session, project_id, model)
    hparams.check("dpo", hyperparameters, HYPERPARAMETERS_PARAM)
    lines = _lines(session, project_id)
    if len(lines) < MIN_EXAMPLES:
        raise InvalidRequest(
            f"DPO needs at least {MIN_EXAMPLES} preference pairs; your ratings make {len(lines)}. "
            "Rate more comparisons (pick the best answer, or give thumbs up and thumbs down), "
            "then train.",
            param="ratings",
            code="invalid_n_examples",
        )
    row = _write(session, blobs, project_id, lines)
    request = CreateFineTuningJobRequest(
        model=model,
        training_file=row.id,
        method={"type": "dpo", "dpo": {"hyperparameters": hyperparameters or {}}},
        suffix=PLAYGROUND_SUFFIX,
        metadata={"source": "playground"},
    )
    try:
        job = jobs_service.create_job(session, project_id, request, resolver=resolver)
    except Exception:
        blobs.delete(row.blob_key)  # the File row goes with the request's rollback
        raise
    return job, row, len(lines)


def _lines(session: Session, project_id: str) -> list[str]:
    return [json.dumps(p, ensure_ascii=False) + "\n" for p in preference_lines(session, project_id)]


def _write(session: Session, blobs: BlobStore, project_id: str, lines: list[str]) -> File:
    name = time.strftime("playground-preferences-%Y%m%d-%H%M%S.jsonl", time.gmtime())
    return files_service.create_file_from_chunks(
        session,
        blobs,
        project_id=project_id,
        filename=name,
        purpose="fine-tune",
        chunks=[line.encode() for line in lines],
    )
