"""Request bodies of the dashboard's own JSON endpoints (its OpenAI-shaped calls reuse protocol/)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.protocol.common import SafeStr


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: SafeStr


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=128, ge=1, le=4096)
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647)


class PlaygroundChat(Sampling):
    model: SafeStr
    messages: list[Message] = Field(min_length=1)


class RatedAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: SafeStr = Field(max_length=512)
    output: SafeStr
    rating: Literal[-1, 1] | None = None
    preferred: bool = False
    completion_tokens: int | None = None
    latency_ms: int | None = None


class Comparison(BaseModel):
    """One prompt, the 2-4 answers it got, and how a person judged them."""

    model_config = ConfigDict(extra="forbid")
    comparison_id: SafeStr | None = Field(default=None, max_length=64)
    messages: list[Message] = Field(min_length=1)
    params: Sampling = Sampling()
    answers: list[RatedAnswer] = Field(min_length=2, max_length=4)


class PlaygroundTrain(BaseModel):
    """The playground's one click: a DPO job on `model` from the project's ratings, with
    `hyperparameters` as `method.dpo.hyperparameters` (checked there; missing ones `auto`)."""

    model_config = ConfigDict(extra="forbid")
    model: SafeStr = Field(max_length=512)
    hyperparameters: dict[str, Any] | None = None
