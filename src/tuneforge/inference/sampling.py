"""Per-request next-token choice: penalties, temperature, top-p, a private RNG, logprobs.

Each row of a batch is sampled with its own parameters and its own `torch.Generator`, so a request
with a seed gets the same tokens whoever shares its batch.
"""

from __future__ import annotations

import secrets

import torch

from tuneforge.inference.types import SamplingParams


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else secrets.randbits(63))
    return gen


def plain_greedy(params: SamplingParams) -> bool:
    """Greedy with nothing per-row to apply: the batch's argmax is this row's token."""
    return (
        params.temperature == 0
        and not params.logprobs
        and not params.presence_penalty
        and not params.frequency_penalty
    )


def batch_greedy(logits: torch.Tensor, params: list[SamplingParams]) -> list[int | None]:
    """The token of every plain-greedy row of `logits` [rows, vocab] (None for the others), with
    one argmax and one device-to-host copy for the whole batch: on a GPU, a copy per row would
    stall the device once per sequence per step."""
    rows = [i for i, p in enumerate(params) if plain_greedy(p)]
    out: list[int | None] = [None] * len(params)
    if not rows:
        return out
    picked = logits if len(rows) == len(params) else logits[torch.tensor(rows, device=logits.device)]
    for i, token in zip(rows, picked.float().argmax(dim=-1).tolist()):
        out[i] = int(token)
    return out


def choose(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    counts: dict[int, int],
) -> tuple[int, torch.Tensor | None]:
    """Pick the next token from one row of logits [vocab].

    Returns the token and, when logprobs were asked for, the model's log-probabilities (before
    penalties and temperature, as OpenAI reports them).
    """
    logits = logits.float()
    logprobs = torch.log_softmax(logits, dim=-1) if params.logprobs else None
    if counts and (params.presence_penalty or params.frequency_penalty):
        ids = torch.tensor(list(counts), device=logits.device)
        n = torch.tensor(list(counts.values()), device=logits.device, dtype=logits.dtype)
        logits = logits.clone()
        logits[ids] -= params.frequency_penalty * n + params.presence_penalty
    if params.temperature == 0:
        return int(torch.argmax(logits)), logprobs
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= params.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    token = torch.multinomial(probs, 1, generator=generator)
    return int(token), logprobs
