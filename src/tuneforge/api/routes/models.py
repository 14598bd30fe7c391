"""Models API (openai-api.md §6.2): parse -> services/models.py -> protocol model.

Also the usage recorder shared by the chat and completions routers. Model ids contain `:`
(ft:…:ckpt-step-N) and base names may contain `/` (Qwen/Qwen2.5-…): hence the `path` converter.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from tuneforge.api.deps import Auth, DbSession, Resolver, ServingDep, SettingsDep
from tuneforge.protocol.models import Model, ModelDeleted, ModelList
from tuneforge.services import export as export_service
from tuneforge.services import models as service

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
def list_models(auth: Auth, session: DbSession, resolver: Resolver) -> ModelList:
    return service.list_models(session, resolver, auth.project_id, auth.organization_id)


@router.get("/models/{model:path}/export")
def export_model(
    model: str,
    auth: Auth,
    session: DbSession,
    resolver: Resolver,
    settings: SettingsDep,
    format: Annotated[str, Query()],
    dtype: Annotated[str | None, Query()] = None,
    quant: Annotated[str | None, Query()] = None,
) -> StreamingResponse:
    """tuneforge's extension: a fine-tuned model or checkpoint as a tar (peft | merged | gguf).
    Under /v1/models because every exportable thing is a model there (final models and
    checkpoints share that namespace); declared before `/models/{model:path}`, which would
    otherwise swallow the `/export` suffix."""
    source = export_service.source_for(session, resolver, auth.project_id, model)
    out = export_service.build(settings, source, format, dtype, quant)  # errors before streaming
    return StreamingResponse(
        export_service.tar_stream(out, remove=out.parent),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{out.name}.tar"'},
    )


@router.get("/models/{model:path}")
def retrieve_model(model: str, auth: Auth, session: DbSession, resolver: Resolver) -> Model:
    return service.retrieve_model(session, resolver, auth.project_id, auth.organization_id, model)


@router.delete("/models/{model:path}")
def delete_model(
    model: str, auth: Auth, session: DbSession, serving: ServingDep, resolver: Resolver
) -> ModelDeleted:
    return service.delete_model(session, serving, resolver, auth.project_id, model)


def usage_recorder(request: Request, auth, model: str):
    """What a completion route hands its service to record the request's tokens (per project and
    key; also charged to the key's tokens-per-minute budget)."""
    from tuneforge.services.usage import record_inference_async

    async def record(prompt_tokens: int, completion_tokens: int) -> None:
        await record_inference_async(
            request.app.state.sessionmaker,
            project_id=auth.project_id,
            key_id=auth.key_id,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    return record
