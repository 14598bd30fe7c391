"""Padding-free batches: rendered examples packed into rows with per-example position_ids.

Each example keeps its own positions (0, 1, 2, ...), and the model is called without an attention
mask, so transformers builds a block-diagonal causal mask from the position resets (sdpa / eager)
or passes sequence boundaries to flash attention: no token attends across examples and no
compute is spent on padding. Targets are shifted inside each example, so the last token of one
example is never trained to predict the first token of the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tuneforge.training.render import IGNORE_INDEX, Rendered


@dataclass
class Packed:
    input_ids: torch.Tensor      # [1, T]
    position_ids: torch.Tensor   # [1, T]
    targets: torch.Tensor        # [1, T]: the next token where trained, else IGNORE_INDEX
    n_targets: int
    n_tokens: int


def shifted_targets(r: Rendered) -> list[int]:
    return r.labels[1:] + [IGNORE_INDEX]


def n_targets(r: Rendered) -> int:
    """Trained tokens of one example, as the loss counts them."""
    return sum(1 for x in r.labels[1:] if x != IGNORE_INDEX)


def pack(examples: list[Rendered], max_tokens: int) -> list[Packed]:
    """Greedy, order-preserving packing into rows of at most `max_tokens` tokens (an example longer
    than that gets a row of its own)."""
    rows: list[list[Rendered]] = []
    size = 0
    for r in examples:
        if rows and size + len(r) <= max_tokens:
            rows[-1].append(r)
            size += len(r)
        else:
            rows.append([r])
            size = len(r)
    return [_row(row) for row in rows]


def _row(row: list[Rendered]) -> Packed:
    ids: list[int] = []
    pos: list[int] = []
    tgt: list[int] = []
    for r in row:
        ids += r.input_ids
        pos += range(len(r.input_ids))
        tgt += shifted_targets(r)
    n = sum(1 for t in tgt if t != IGNORE_INDEX)
    return Packed(torch.tensor([ids]), torch.tensor([pos]), torch.tensor([tgt]), n, len(ids))
