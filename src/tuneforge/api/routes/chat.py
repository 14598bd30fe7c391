"""`POST /v1/chat/completions` (openai-api.md §10): parse -> services/chat.py -> response/stream."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tuneforge.api.deps import Auth, DbSession, Resolver, ServingDep
from tuneforge.api.disconnect import cancel_on_disconnect, event_stream
from tuneforge.api.routes.models import usage_recorder
from tuneforge.protocol.chat import ChatCompletion, ChatCompletionRequest
from tuneforge.services import chat as service

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    request: Request,
    body: ChatCompletionRequest,
    auth: Auth,
    session: DbSession,
    serving: ServingDep,
    resolver: Resolver,
) -> ChatCompletion | Response:
    plan = await service.plan(body, session, serving, auth.project_id, resolver)
    plan.on_usage = usage_recorder(request, auth, body.model)
    if body.stream:
        return event_stream(service.stream(plan, serving))
    return await cancel_on_disconnect(request, service.complete(plan, serving))
