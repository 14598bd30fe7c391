"""Plain data passed between services and the engine (no torch here, so importing it is cheap)."""

from __future__ import annotations

from dataclasses import dataclass, field


class EngineError(RuntimeError):
    """Generation could not run (model failed to load, step failed, model deleted meanwhile)."""


@dataclass(frozen=True)
class ModelTarget:
    """What to run: a base model, optionally with one LoRA adapter attached.

    `name` is the public model id (used to drop the model on delete). A full fine-tune is served as
    its own base (`base_source` = its directory, no adapter). The tokenizer and chat template always
    come from `tokenizer_source`: the directory saved with the model, so serving uses exactly the
    template training used. `engine` says who answers: "builtin" (inference/engine.py) or "vllm"
    (inference/vllm_engine.py, one server per `base_source`, whose `vllm_url` is the operator's
    server or None for one tuneforge starts). `own_server`: a full fine-tune served by vLLM, from a
    server of its own that tuneforge starts on demand and stops when it is deleted or evicted.
    """

    name: str
    base_source: str
    tokenizer_source: str
    adapter_path: str | None = None
    engine: str = "builtin"
    vllm_url: str | None = None
    own_server: bool = False


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None: up to the context limit
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random seed
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False  # benchmarks: always generate max_tokens


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]] = field(default_factory=list)


@dataclass(frozen=True)
class Delta:
    """New text for one sequence (possibly empty), with the logprobs of the tokens it came from."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str
