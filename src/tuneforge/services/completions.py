"""Legacy `POST /v1/completions` (openai-api.md §10.4): raw prompts, for base models and models
fine-tuned on prompt/completion data. A prompt is tokenized as training tokenized prompts (the
tokenizer's usual BOS, no EOS). Choices are ordered prompt by prompt, `n` per prompt."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.errors import InvalidRequest
from tuneforge.inference.holder import Serving
from tuneforge.inference.types import Delta, TokenLogprob
from tuneforge.protocol.chat import Usage
from tuneforge.protocol.completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from tuneforge.services import generation as gen
from tuneforge.services.resolver import ModelResolver


@dataclass(kw_only=True)
class CompletionPlan(gen.Plan):
    prompts: list[tuple[str, list[int]]]  # (text to echo, token ids); `params` are one prompt's
    echo: bool
    logprobs: int | None


async def plan(
    req: CompletionRequest, session: Session, serving: Serving, project_id: str, resolver: ModelResolver
) -> CompletionPlan:
    target = await gen.resolve(session, resolver, project_id, req.model)
    if req.best_of is not None and req.best_of != (req.n or 1):
        raise InvalidRequest("best_of is not supported unless it equals n.", param="best_of")
    if req.suffix:
        raise InvalidRequest("suffix is not supported by this model.", param="suffix")
    engine = await gen.engine(serving, target)
    raw: list[Any] = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if raw and all(isinstance(x, int) for x in raw):
        raw = [raw]  # one prompt given as token ids
    if not raw:
        raise InvalidRequest("prompt must not be empty.", param="prompt")
    prompts = []
    for p in raw:
        if isinstance(p, str):
            prompts.append((p, await engine.prepare_text(target, p)))
        else:
            prompts.append((await engine.decode(target, list(p)), list(p)))
        if not prompts[-1][1]:
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        gen.check_context(serving, target, len(prompts[-1][1]), req.max_tokens, "prompt")
    return CompletionPlan.of(
        req,
        "cmpl-",
        target,
        prompts=prompts,
        params=gen.choice_params(
            req, max_tokens=req.max_tokens, logprobs=req.logprobs is not None, top_logprobs=req.logprobs or 0
        ),
        echo=bool(req.echo),
        logprobs=req.logprobs,
    )


def _generates(p: CompletionPlan) -> bool:
    return (p.params[0].max_tokens or 1) > 0  # max_tokens=0: echo only


async def complete(p: CompletionPlan, serving: Serving) -> Completion:
    choices, completion = [], 0
    for k, (text, ids) in enumerate(p.prompts):
        if _generates(p):
            results = await gen.run_choices(serving, p.target, ids, p.params)
        else:
            results = [gen.ChoiceResult(finish_reason="length") for _ in p.params]
        for i, r in enumerate(results):
            completion += r.completion_tokens
            choices.append(
                CompletionChoice(
                    index=k * len(p.params) + i,
                    text=(text if p.echo else "") + r.text,
                    logprobs=_logprobs(r.logprobs, len(text) if p.echo else 0)
                    if p.logprobs is not None
                    else None,
                    finish_reason=r.finish_reason,
                )
            )
    usage = await p.settle(sum(len(ids) for _, ids in p.prompts), completion)
    return Completion(id=p.id, created=p.created, model=p.model, choices=choices, usage=usage)


def stream(p: CompletionPlan, serving: Serving) -> AsyncIterator[str]:
    return gen.sse(_chunks(p, serving))


async def _chunks(p: CompletionPlan, serving: Serving) -> AsyncGenerator[str, None]:
    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        return Completion(id=p.id, created=p.created, model=p.model, choices=choices, usage=usage).sse()

    completion, n = 0, len(p.params)
    offsets: dict[int, int] = {}
    for k, (text, ids) in enumerate(p.prompts):
        if p.echo:
            for i in range(n):
                offsets[k * n + i] = len(text)
                yield chunk([CompletionChoice(index=k * n + i, text=text, finish_reason=None)])
        if not _generates(p):
            for i in range(n):
                yield chunk([CompletionChoice(index=k * n + i, text="", finish_reason="length")])
            continue
        async for index, ev in gen.merged_stream(serving, p.target, ids, p.params, first_index=k * n):
            if isinstance(ev, Delta):
                lp = None
                if p.logprobs is not None:
                    lp = _logprobs(ev.logprobs, offsets.get(index, 0))
                offsets[index] = offsets.get(index, 0) + len(ev.text)
                yield chunk([CompletionChoice(index=index, text=ev.text, logprobs=lp, finish_reason=None)])
            else:
                completion += ev.completion_tokens
                yield chunk([CompletionChoice(index=index, text="", finish_reason=ev.reason)])
    usage = await p.settle(sum(len(ids) for _, ids in p.prompts), completion)
    if p.include_usage:
        yield chunk([], usage=usage)


def _logprobs(lps: list[TokenLogprob], offset: int) -> CompletionLogprobs:
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for lp in lps:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({t: v for t, v, _ in lp.top} if lp.top else None)
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out
