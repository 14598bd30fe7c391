"""`POST /v1/chat/completions`: messages -> the model's own chat template -> the engine -> the
OpenAI response or chunk stream (openai-api.md §10.1–§10.3).

Tool calls: when the request offers `tools`, `<tool_call>{"name", "arguments"}</tool_call>` blocks
in the output (the Qwen/ChatML convention our templates use) become `tool_calls` with
finish_reason "tool_calls". A streamed request with tools sends its text at the end of each choice,
because a tool call can only be recognised once its block is complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tuneforge.errors import InvalidRequest
from tuneforge.ids import new_id
from tuneforge.inference.holder import Serving
from tuneforge.inference.types import Delta, TokenLogprob
from tuneforge.protocol.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    ToolCallDelta,
    ToolCallDeltaFunction,
    ToolCallFunction,
    ToolCallOut,
    TopLogprob,
    Usage,
)
from tuneforge.protocol.chat import (
    TokenLogprob as WireLogprob,
)
from tuneforge.services import generation as gen
from tuneforge.services.resolver import ModelResolver
from tuneforge.training.render import to_hf_chat

FINGERPRINT = "fp_tuneforge"
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass(kw_only=True)
class ChatPlan(gen.Plan):
    prompt_ids: list[int]
    tools: bool
    logprobs: bool


async def plan(
    req: ChatCompletionRequest, session: Session, serving: Serving, project_id: str, resolver: ModelResolver
) -> ChatPlan:
    """Everything that can be a client mistake is checked here, before a stream starts."""
    target = await gen.resolve(session, resolver, project_id, req.model)
    try:
        messages, tools, _ = to_hf_chat(
            {
                "messages": [m.model_dump(exclude_none=True) for m in req.messages],
                "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
            }
        )
    except ValueError as exc:
        raise InvalidRequest(f"Invalid 'messages': {exc}.", param="messages") from exc
    for m in messages:  # templates concatenate strings: a missing content is an empty one
        if m.get("content") is None and not m.get("tool_calls"):
            m["content"] = ""
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true.", param="top_logprobs")
    engine = await gen.engine(serving, target)
    prompt_ids = await engine.prepare_chat(target, messages, tools)
    max_tokens = req.max_completion_tokens or req.max_tokens
    gen.check_context(serving, target, len(prompt_ids), max_tokens, "messages")
    return ChatPlan.of(
        req,
        "chatcmpl-",
        target,
        prompt_ids=prompt_ids,
        params=gen.choice_params(
            req, max_tokens=max_tokens, logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs or 0
        ),
        tools=bool(req.tools),
        logprobs=bool(req.logprobs),
    )


async def complete(p: ChatPlan, serving: Serving) -> ChatCompletion:
    results = await gen.run_choices(serving, p.target, p.prompt_ids, p.params)
    choices = []
    for i, r in enumerate(results):
        content, calls = split_tool_calls(r.text) if p.tools else (r.text, [])
        choices.append(
            Choice(
                index=i,
                message=AssistantMessage(content=content, tool_calls=calls or None),
                logprobs=_logprobs(r.logprobs) if p.logprobs else None,
                finish_reason="tool_calls" if calls else r.finish_reason,
            )
        )
    usage = await p.settle(len(p.prompt_ids), sum(r.completion_tokens for r in results))
    return ChatCompletion(
        id=p.id,
        created=p.created,
        model=p.model,
        choices=choices,
        usage=usage,
        system_fingerprint=FINGERPRINT,
    )


def stream(p: ChatPlan, serving: Serving) -> AsyncIterator[str]:
    return gen.sse(_chunks(p, serving))


async def _chunks(p: ChatPlan, serving: Serving) -> AsyncGenerator[str, None]:
    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        return ChatCompletionChunk(
            id=p.id,
            created=p.created,
            model=p.model,
            choices=choices,
            system_fingerprint=FINGERPRINT,
            usage=usage,
        ).sse()

    held: dict[int, list[str]] = {
        i: [] for i in range(len(p.params))
    }  # text held back per choice (tools only)
    completion = 0
    for i in range(len(p.params)):
        yield chunk([ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))])
    async for i, ev in gen.merged_stream(serving, p.target, p.prompt_ids, p.params):
        if isinstance(ev, Delta):
            if p.tools:
                held[i].append(ev.text)
                continue
            if ev.text or ev.logprobs:
                yield chunk(
                    [
                        ChunkChoice(
                            index=i,
                            delta=ChunkDelta(content=ev.text),
                            logprobs=_logprobs(ev.logprobs) if p.logprobs else None,
                        )
                    ]
                )
            continue
        completion += ev.completion_tokens
        reason = ev.reason
        if p.tools:
            content, calls = split_tool_calls("".join(held[i]))
            if content:
                yield chunk([ChunkChoice(index=i, delta=ChunkDelta(content=content))])
            if calls:
                reason = "tool_calls"
                yield chunk(
                    [
                        ChunkChoice(
                            index=i,
                            delta=ChunkDelta(
                                tool_calls=[
                                    ToolCallDelta(
                                        index=j,
                                        id=c.id,
                                        type="function",
                                        function=ToolCallDeltaFunction(
                                            name=c.function.name, arguments=c.function.arguments
                                        ),
                                    )
                                    for j, c in enumerate(calls)
                                ]
                            ),
                        )
                    ]
                )
        yield chunk([ChunkChoice(index=i, delta=ChunkDelta(), finish_reason=reason)])
    usage = await p.settle(len(p.prompt_ids), completion)
    if p.include_usage:
        yield chunk([], usage=usage)


def split_tool_calls(text: str) -> tuple[str | None, list[ToolCallOut]]:
    """Model output -> (content without the tool-call blocks, parsed tool calls)."""
    if "<tool_call>" not in text:
        return text, []
    calls = []
    for body in _TOOL_CALL.findall(text):
        try:
            obj = json.loads(body)
            name, args = obj["name"], obj.get("arguments", {})
        except (ValueError, KeyError, TypeError):
            return text, []  # not a well-formed call: leave the text as the model wrote it
        if not isinstance(name, str):
            return text, []
        arguments = args if isinstance(args, str) else json.dumps(args)
        calls.append(
            ToolCallOut(id=new_id("call_"), function=ToolCallFunction(name=name, arguments=arguments))
        )
    content = _TOOL_CALL.sub("", text).strip()
    return content or None, calls


def _logprobs(lps: list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            WireLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=lp.bytes,
                top_logprobs=[TopLogprob(token=t, logprob=v, bytes=b) for t, v, b in lp.top],
            )
            for lp in lps
        ]
    )
