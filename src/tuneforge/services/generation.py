"""What chat and legacy completions share: the plan's common part, request checks, the engine,
running n choices on it (together, so they batch), merging their streams, usage, and the SSE
stream's end (`[DONE]`, or the OpenAI error line for a broken stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy.orm import Session

from tuneforge.errors import InvalidRequest, TuneforgeError
from tuneforge.ids import new_id, now
from tuneforge.inference.holder import Serving
from tuneforge.inference.types import Delta, EngineError, Finished, ModelTarget, SamplingParams, TokenLogprob
from tuneforge.protocol.chat import ChatCompletionRequest, Usage
from tuneforge.protocol.completions import CompletionRequest
from tuneforge.services.resolver import ModelResolver

if TYPE_CHECKING:
    from tuneforge.inference.engine import Engine
    from tuneforge.inference.vllm_engine import VllmEngine


class GenerationFailed(TuneforgeError):
    """The engine could not produce the completion (a server-side failure, logged)."""


@dataclass(kw_only=True)
class Plan:
    """What a chat or legacy completion request decided before it generates (its endpoint's plan
    adds the rest): every client mistake is found while planning, before a stream starts."""

    id: str
    created: int
    model: str
    target: ModelTarget
    params: list[SamplingParams]  # one per choice (of each prompt)
    include_usage: bool
    # Called once with (prompt_tokens, completion_tokens) when the answer is complete (usage
    # accounting); set by the caller.
    on_usage: Callable[[int, int], Awaitable[None]] | None = None

    @classmethod
    def of(
        cls,
        req: ChatCompletionRequest | CompletionRequest,
        id_prefix: str,
        target: ModelTarget,
        **fields: Any,
    ) -> Self:
        """The plan of `req` for `target`, with a new id; `fields`: the rest (the endpoint's own)."""
        return cls(
            id=new_id(id_prefix),
            created=now(),
            model=req.model,
            target=target,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            **fields,
        )

    async def settle(self, prompt_tokens: int, completion_tokens: int) -> Usage:
        """The answer is complete: its usage recorded (`on_usage`), and as the wire object."""
        if self.on_usage is not None:
            await self.on_usage(prompt_tokens, completion_tokens)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


@dataclass
class ChoiceResult:
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str = "stop"
    completion_tokens: int = 0


async def resolve(session: Session, resolver: ModelResolver, project_id: str, name: str) -> ModelTarget:
    """Name -> model, then the request's DB connection goes back to the pool: generation needs no
    database and can take long, and holding a connection per in-flight request would exhaust the
    pool under concurrency (the session reconnects by itself if used again)."""
    try:
        return await asyncio.to_thread(resolver.target, session, project_id, name)
    finally:
        session.close()


async def engine(serving: Serving, target: ModelTarget) -> Engine | VllmEngine:
    """The engine that answers `target`, off the event loop (the first call imports torch and
    builds the engine; a vLLM server that is not up raises Unavailable here)."""
    return await asyncio.to_thread(serving.engine_for, target)


def stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def choice_params(
    req: ChatCompletionRequest | CompletionRequest,
    *,
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int,
) -> list[SamplingParams]:
    """One SamplingParams per choice from the request's sampling fields (OpenAI's defaults where
    absent); with a seed, choice i uses seed + i (reproducible, distinct)."""
    return [
        SamplingParams(
            seed=None if req.seed is None else req.seed + i,
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stop=stops(req.stop),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )
        for i in range(req.n or 1)
    ]


def check_context(
    serving: Serving, target: ModelTarget, prompt_tokens: int, max_tokens: int | None, param: str
) -> None:
    limit = serving.engine_for(target).context_length(target)
    asked = prompt_tokens + (max_tokens or 0)
    if prompt_tokens >= limit or asked > limit:
        raise InvalidRequest(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{max(asked, prompt_tokens)} tokens ({prompt_tokens} in the {param}, {max_tokens or 0} "
            "in the completion). Please reduce the length of the messages or completion.",
            param=param,
            code="context_length_exceeded",
        )


async def run_choice(
    serving: Serving, target: ModelTarget, prompt_ids: list[int], params: SamplingParams
) -> ChoiceResult:
    out = ChoiceResult()
    parts: list[str] = []
    async for ev in _events(serving, target, prompt_ids, params):
        if isinstance(ev, Delta):
            parts.append(ev.text)
            out.logprobs += ev.logprobs
        else:
            out.finish_reason, out.completion_tokens = ev.reason, ev.completion_tokens
    out.text = "".join(parts)
    return out


async def run_choices(
    serving: Serving, target: ModelTarget, prompt_ids: list[int], params: list[SamplingParams]
) -> list[ChoiceResult]:
    return list(await asyncio.gather(*[run_choice(serving, target, prompt_ids, p) for p in params]))


async def merged_stream(
    serving: Serving,
    target: ModelTarget,
    prompt_ids: list[int],
    params: list[SamplingParams],
    first_index: int = 0,
) -> AsyncIterator[tuple[int, Delta | Finished]]:
    """(choice index, event) from all choices as they come. Leaving early cancels every choice."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump(index: int, p: SamplingParams) -> None:
        try:
            async for ev in _events(serving, target, prompt_ids, p):
                await queue.put((index, ev))
        except Exception as exc:  # handed to the consumer, which reports it in the stream
            await queue.put((index, exc))
        finally:
            await queue.put((index, done))

    tasks = [asyncio.create_task(pump(first_index + i, p)) for i, p in enumerate(params)]
    try:
        remaining = len(tasks)
        while remaining:
            index, ev = await queue.get()
            if ev is done:
                remaining -= 1
            elif isinstance(ev, Exception):
                raise ev
            else:
                yield index, ev
    finally:
        for t in tasks:
            t.cancel()


async def _events(
    serving: Serving, target: ModelTarget, prompt_ids: list[int], params: SamplingParams
) -> AsyncIterator[Delta | Finished]:
    try:
        async for ev in serving.engine_for(target).generate(target, prompt_ids, params):
            yield ev
    except EngineError as exc:
        raise GenerationFailed(str(exc)) from exc


async def sse(lines: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """A response's SSE lines, then `[DONE]`. A failure after the stream started (its status is
    sent) becomes an error line instead; a client that leaves closes `lines` at once, which
    cancels its choices."""
    try:
        async with aclosing(lines):
            async for line in lines:
                yield line
    except Exception as exc:
        yield error_line(exc)
    yield DONE


def error_line(exc: Exception) -> str:
    """A failure after the stream started: the SDK raises APIError on an `error` payload."""
    if isinstance(exc, TuneforgeError):
        err = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
    else:
        err = {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    return f"data: {json.dumps({'error': err})}\n\n"


DONE = "data: [DONE]\n\n"
