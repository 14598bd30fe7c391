"""Wire shapes of the fine-tuning jobs API (openai-api.md §2–§4), defined once.

The create body is parsed loosely (values typed `Any` where OpenAI allows `"auto"` or a number):
`services/jobs.py` checks every value itself so that each mistake is a 400 naming its exact
`param` (e.g. `method.supervised.hyperparameters.n_epochs`) with a readable message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from tuneforge.protocol.common import ListResponse, SafeStr

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]


# ---- request ---------------------------------------------------------------------------------
def _no_nul_inside(value: Any, path: str = "", key: bool = False) -> Any:
    # Loose fields are stored as given (JSON columns): PostgreSQL refuses NUL in any string of
    # them, keys included, so refuse it here as a client mistake, saying where it was.
    if isinstance(value, str) and "\x00" in value:
        where = f"'{path.lstrip('.')}'" if path else "the value"
        if key:
            where = f"a key in {where}" if path else "a key"
        raise ValueError(f"{where} must not contain NUL characters")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nul_inside(k, path, key=True)
            _no_nul_inside(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_nul_inside(v, f"{path}[{i}]")
    return value


NoNulInside = Annotated[Any, AfterValidator(_no_nul_inside)]


class CreateFineTuningJobRequest(BaseModel):
    # OpenAI rejects unknown arguments; so do we (400 through the one error mapping).
    model_config = ConfigDict(extra="forbid")

    model: SafeStr
    training_file: SafeStr
    validation_file: SafeStr | None = None
    hyperparameters: Any = None
    suffix: NoNulInside = None
    seed: Any = None
    metadata: NoNulInside = None
    integrations: NoNulInside = None
    method: Any = None


# ---- objects ---------------------------------------------------------------------------------
class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class HyperparametersOut(BaseModel):
    batch_size: Literal["auto"] | int | None = "auto"
    learning_rate_multiplier: Literal["auto"] | float | None = "auto"
    n_epochs: Literal["auto"] | int | None = "auto"


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: HyperparametersOut
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    user_provided_suffix: str | None = None
    # tuneforge extensions (USD, from the configured prices; extra fields pass SDK validation):
    # the estimate made when the files were validated, and the cost once tokens were trained.
    estimated_trained_tokens: int | None = None
    estimated_cost: float | None = None
    cost: float | None = None


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]


# ---- lists (the one cursor list envelope) ----------------------------------------------------
FineTuningJobList = ListResponse[FineTuningJob]
FineTuningJobEventList = ListResponse[FineTuningJobEvent]
FineTuningJobCheckpointList = ListResponse[FineTuningJobCheckpoint]


# ---- checkpoint permissions (openai-api.md §4.3) ---------------------------------------------
class CreateCheckpointPermissionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_ids: list[SafeStr]


class CheckpointPermission(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    created_at: int
    project_id: str


CheckpointPermissionList = ListResponse[CheckpointPermission]


class CheckpointPermissionDeleted(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    deleted: bool = True
