"""Legacy `POST /v1/completions` (openai-api.md §10.4): parse -> services/completions.py."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tuneforge.api.deps import Auth, DbSession, Resolver, ServingDep
from tuneforge.api.disconnect import cancel_on_disconnect, event_stream
from tuneforge.api.routes.models import usage_recorder
from tuneforge.protocol.completions import Completion, CompletionRequest
from tuneforge.services import completions as service

router = APIRouter(prefix="/v1", tags=["completions"])


@router.post("/completions", response_model=None)
async def create_completion(
    request: Request,
    body: CompletionRequest,
    auth: Auth,
    session: DbSession,
    serving: ServingDep,
    resolver: Resolver,
) -> Completion | Response:
    plan = await service.plan(body, session, serving, auth.project_id, resolver)
    plan.on_usage = usage_recorder(request, auth, body.model)
    if body.stream:
        return event_stream(service.stream(plan, serving))
    return await cancel_on_disconnect(request, service.complete(plan, serving))
