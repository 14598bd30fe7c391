"""GET /v1/usage: trained and served tokens and their cost for a period (a tuneforge extension).

A project key sees its own project; an admin key sees every project.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from tuneforge.api.deps import Auth, DbSession, SettingsDep
from tuneforge.protocol.usage import UsageBucket, UsageReport
from tuneforge.services import usage as service

router = APIRouter(prefix="/v1", tags=["usage"])


def _bucket(line: service.UsageLine) -> UsageBucket:
    return UsageBucket(
        project=line.project,
        model=line.model,
        jobs=line.jobs,
        trained_tokens=line.trained_tokens,
        training_cost=line.training_cost,
        requests=line.requests,
        prompt_tokens=line.prompt_tokens,
        completion_tokens=line.completion_tokens,
        inference_cost=line.inference_cost,
        total_cost=line.total_cost,
    )


@router.get("/usage")
def get_usage(
    auth: Auth,
    session: DbSession,
    settings: SettingsDep,
    start_time: int | None = None,
    end_time: int | None = None,
    group_by: Literal["project", "model", "project_model"] = "project_model",
) -> UsageReport:
    result = service.report(
        session,
        settings,
        start_time=start_time,
        end_time=end_time,
        group_by=group_by,
        project_id=None if auth.is_admin else auth.project_id,
    )
    return UsageReport(
        data=[_bucket(line) for line in result.lines],
        start_time=result.start_time,
        end_time=result.end_time,
        group_by=result.group_by,
        totals=_bucket(result.totals),
    )
