"""Models API (openai-api.md §6.2): parse -> services/models.py -> protocol model.

Also the usage recorder shared by the chat and completions routers. Model ids contain `:`
(ft:…:ckpt-step-N) and base names may contain `/` (Qwen/Qwen2.5-…): hence the `path` converter.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneforge.api.deps import Auth, DbSession, ServingDep
from tuneforge.protocol.models import Model, ModelDeleted, ModelList
from tuneforge.services import models as service

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
def list_models(auth: Auth, session: DbSession, serving: ServingDep) -> ModelList:
    return service.list_models(session, serving.catalog, auth.project_id, auth.organization_id)


@router.get("/models/{model:path}")
def retrieve_model(model: str, auth: Auth, session: DbSession, serving: ServingDep) -> Model:
    return service.retrieve_model(session, serving.catalog, auth.project_id, auth.organization_id, model)


@router.delete("/models/{model:path}")
def delete_model(model: str, auth: Auth, session: DbSession, serving: ServingDep) -> ModelDeleted:
    return service.delete_model(session, serving, auth.project_id, model)


def usage_recorder(request: Request, auth, model: str):
    """What a completion route hands its service to record the request's tokens (per project and
    key; also charged to the key's tokens-per-minute budget)."""
    from tuneforge.services.usage import record_inference_async

    async def record(prompt_tokens: int, completion_tokens: int) -> None:
        await record_inference_async(request.app.state.sessionmaker, project_id=auth.project_id,
                                     key_id=auth.key_id, model=model, prompt_tokens=prompt_tokens,
                                     completion_tokens=completion_tokens)

    return record
