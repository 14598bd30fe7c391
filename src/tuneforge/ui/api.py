"""The dashboard's JSON endpoints (called by its own pages, same origin, session cookie).

Thin: parse -> services (the API's own) -> JSON. Errors leave in the OpenAI envelope through the
one mapping in api/errors.py, so a form shows the same message and `param` the API would return.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from tuneforge.api.deps import Blobs, DbSession, Resolver, ServingDep, SettingsDep
from tuneforge.api.disconnect import event_stream
from tuneforge.api.routes.files import receive_file
from tuneforge.errors import InvalidRequest
from tuneforge.protocol.files import FileDeleted, FileObject
from tuneforge.protocol.fine_tuning import CreateFineTuningJobRequest, FineTuningJob
from tuneforge.services import export as export_service
from tuneforge.services import files as files_service
from tuneforge.services import jobs as jobs_service
from tuneforge.ui import ratings, views
from tuneforge.ui.auth import UiUser
from tuneforge.ui.schemas import Comparison, PlaygroundChat, PlaygroundTrain
from tuneforge.ui.validation import Tokenizers, file_report

router = APIRouter(prefix="/ui/api", include_in_schema=False)


# ---- jobs ------------------------------------------------------------------------------------
@router.get("/models/{model:path}/export")
def export_model(
    model: str,
    user: UiUser,
    session: DbSession,
    resolver: Resolver,
    settings: SettingsDep,
    format: str,
    dtype: str | None = None,
    quant: str | None = None,
) -> StreamingResponse:
    """The job page's download links: the same export and tar stream as the API's route."""
    source = export_service.source_for(session, resolver, user.project_id, model)
    out = export_service.build(settings, source, format, dtype, quant)
    return StreamingResponse(
        export_service.tar_stream(out, remove=out.parent),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{out.name}.tar"'},
    )


@router.post("/jobs")
def create_job(
    body: CreateFineTuningJobRequest, user: UiUser, session: DbSession, resolver: Resolver
) -> FineTuningJob:
    job = jobs_service.create_job(session, user.project_id, body, resolver=resolver)
    return jobs_service.job_to_wire(job, user.organization_id)


@router.get("/jobs/{job_id}/live")
def job_live(
    job_id: str, user: UiUser, session: DbSession, after: Annotated[int, Query(ge=0)] = 0
) -> dict[str, Any]:
    return views.job_live(session, user, job_id, after=after)


@router.post("/jobs/{job_id}/{action}")
def job_action(job_id: str, action: str, user: UiUser, session: DbSession) -> FineTuningJob:
    actions = {
        "cancel": jobs_service.cancel_job,
        "pause": jobs_service.pause_job,
        "resume": jobs_service.resume_job,
    }
    if action not in actions:
        raise InvalidRequest(f"Unknown action {action!r}: expected cancel, pause or resume.", param="action")
    return jobs_service.job_to_wire(actions[action](session, user.project_id, job_id), user.organization_id)


# ---- files -----------------------------------------------------------------------------------
@router.post("/files")
async def upload_file(
    request: Request, user: UiUser, session: DbSession, settings: SettingsDep, blobs: Blobs
) -> FileObject:
    """The same streamed upload as POST /v1/files (same checks, same limits)."""
    return await receive_file(request, session, settings, blobs, project_id=user.project_id)


@router.delete("/files/{file_id}")
def delete_file(file_id: str, user: UiUser, session: DbSession, blobs: Blobs) -> FileDeleted:
    row = files_service.delete_file(session, blobs, user.project_id, file_id)
    return FileDeleted(id=row.id)


@router.get("/files/{file_id}/report")
def validation_report(
    request: Request,
    file_id: str,
    user: UiUser,
    session: DbSession,
    blobs: Blobs,
    resolver: Resolver,
    settings: SettingsDep,
    model: str = "tuneforge-tiny",
    n_epochs: str = "auto",
    file_param: str = "training_file",
    method: str = "supervised",
) -> dict[str, Any]:
    if n_epochs != "auto" and not n_epochs.isdigit():
        raise InvalidRequest("n_epochs must be 'auto' or an integer.", param="n_epochs")
    if file_param not in ("training_file", "validation_file"):
        raise InvalidRequest("file_param must be training_file or validation_file.", param="file_param")
    if method not in ("supervised", "dpo"):
        raise InvalidRequest("method must be supervised or dpo.", param="method")
    state = request.app.state
    if getattr(state, "ui_tokenizers", None) is None:
        state.ui_tokenizers = Tokenizers()
    return file_report(
        session,
        blobs,
        user.project_id,
        file_id,
        resolver=resolver,
        settings=settings,
        tokenizers=state.ui_tokenizers,
        model=model,
        n_epochs=None if n_epochs == "auto" else int(n_epochs),
        file_param=file_param,
        method=method,
    )


# ---- playground ------------------------------------------------------------------------------
@router.post("/playground/chat")
async def playground_chat(
    body: PlaygroundChat, user: UiUser, session: DbSession, serving: ServingDep, resolver: Resolver
) -> StreamingResponse:
    """One model's answer for the side-by-side view: exactly a streamed /v1/chat/completions
    (same service, same checks, same chunks), with usage, for the signed-in project."""
    from tuneforge.protocol.chat import ChatCompletionRequest
    from tuneforge.services import chat as chat_service

    req = ChatCompletionRequest(
        model=body.model,
        messages=[m.model_dump() for m in body.messages],
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        seed=body.seed,
        stream=True,
        stream_options={"include_usage": True},
    )
    plan = await chat_service.plan(req, session, serving, user.project_id, resolver)
    return event_stream(chat_service.stream(plan, serving))


# ---- playground ratings ----------------------------------------------------------------------
@router.post("/playground/ratings")
def save_ratings(body: Comparison, user: UiUser, session: DbSession) -> dict[str, Any]:
    cid = ratings.save_comparison(session, user.project_id, body)
    return {"comparison_id": cid, "rated": ratings.count(session, user.project_id)}


@router.post("/playground/export")
def export_ratings(user: UiUser, session: DbSession, blobs: Blobs) -> dict[str, Any]:
    row, pairs = ratings.export(session, blobs, user.project_id)
    return {"file": files_service.file_to_wire(row).model_dump(mode="json"), "pairs": pairs}


@router.post("/playground/train")
def train_on_ratings(
    body: PlaygroundTrain, user: UiUser, session: DbSession, blobs: Blobs, resolver: Resolver
) -> dict[str, Any]:
    """One click: the ratings as a preference file, and a DPO job on the rated model."""
    job, row, pairs = ratings.train_dpo(
        session, blobs, user.project_id, body.model, body.hyperparameters, resolver=resolver
    )
    return {
        "job": jobs_service.job_to_wire(job, user.organization_id).model_dump(mode="json"),
        "file": files_service.file_to_wire(row).model_dump(mode="json"),
        "pairs": pairs,
    }
