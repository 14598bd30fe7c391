"""Fine-tuning jobs API (openai-api.md §2–§4): parse → services/jobs.py → protocol model."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request

from tuneforge.api.deps import Auth, DbSession, Resolver
from tuneforge.protocol.fine_tuning import (
    CreateFineTuningJobRequest,
    FineTuningJob,
    FineTuningJobCheckpointList,
    FineTuningJobEventList,
    FineTuningJobList,
)
from tuneforge.services import jobs as service

router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"])

_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


@router.post("/jobs")
def create_job(
    body: CreateFineTuningJobRequest, auth: Auth, session: DbSession, resolver: Resolver
) -> FineTuningJob:
    job = service.create_job(session, auth.project_id, body, resolver=resolver)
    return service.job_to_wire(job, auth.organization_id)


@router.get("/jobs")
def list_jobs(
    request: Request,
    auth: Auth,
    session: DbSession,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 20,
) -> FineTuningJobList:
    # The SDK sends the metadata filter as deepObject query keys: metadata[k]=v.
    metadata = {m.group(1): v for k, v in request.query_params.items() if (m := _METADATA_KEY.match(k))}
    page = service.list_jobs(session, auth.project_id, after=after, limit=limit, metadata=metadata)
    return FineTuningJobList.of(
        page.items, page.has_more, lambda job: service.job_to_wire(job, auth.organization_id)
    )


@router.get("/jobs/{job_id}")
def retrieve_job(job_id: str, auth: Auth, session: DbSession) -> FineTuningJob:
    return service.job_to_wire(service.get_job(session, auth.project_id, job_id), auth.organization_id)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, auth: Auth, session: DbSession) -> FineTuningJob:
    return service.job_to_wire(service.cancel_job(session, auth.project_id, job_id), auth.organization_id)


@router.post("/jobs/{job_id}/pause")
def pause_job(job_id: str, auth: Auth, session: DbSession) -> FineTuningJob:
    return service.job_to_wire(service.pause_job(session, auth.project_id, job_id), auth.organization_id)


@router.post("/jobs/{job_id}/resume")
def resume_job(job_id: str, auth: Auth, session: DbSession) -> FineTuningJob:
    return service.job_to_wire(service.resume_job(session, auth.project_id, job_id), auth.organization_id)


@router.get("/jobs/{job_id}/events")
def list_events(
    job_id: str,
    auth: Auth,
    session: DbSession,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 20,
) -> FineTuningJobEventList:
    page = service.list_events(session, auth.project_id, job_id, after=after, limit=limit)
    return FineTuningJobEventList.of(page.items, page.has_more, service.event_to_wire)


@router.get("/jobs/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str,
    auth: Auth,
    session: DbSession,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10,
) -> FineTuningJobCheckpointList:
    page = service.list_checkpoints(session, auth.project_id, job_id, after=after, limit=limit)
    return FineTuningJobCheckpointList.of(page.items, page.has_more, service.checkpoint_to_wire)
