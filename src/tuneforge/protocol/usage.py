"""Wire shape of GET /v1/usage (a tuneforge extension; costs in USD from the configured prices)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class UsageBucket(BaseModel):
    object: Literal["usage.bucket"] = "usage.bucket"
    project: str | None = None  # project name (None when grouped by model only)
    model: str | None = None  # base or fine-tuned model (None when grouped by project)
    jobs: int  # finished jobs that trained tokens in the period
    trained_tokens: int
    training_cost: float
    requests: int  # completed inference requests
    prompt_tokens: int
    completion_tokens: int
    inference_cost: float
    total_cost: float


class UsageReport(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageBucket]
    has_more: bool = False
    start_time: int
    end_time: int
    group_by: Literal["project", "model", "project_model"]
    totals: UsageBucket
