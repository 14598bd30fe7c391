"""Padding-free batches: rendered sequences packed into rows with per-sequence position_ids.

Each sequence keeps its own positions (0, 1, 2, ...), and the model is called without an attention
mask, so transformers builds a block-diagonal causal mask from the position resets (sdpa / eager)
or passes sequence boundaries to flash attention: no token attends across sequences and no
compute is spent on padding. Targets are shifted inside each sequence, so the last token of one
sequence is never trained to predict the first token of the next.

The unit packed is a sequence, not an example: an example rendered per assistant turn (templates
that rewrite earlier turns, render.py) is several sequences, packed like separate examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tuneforge.training.render import IGNORE_INDEX, Rendered


@dataclass
class Packed:
    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    targets: torch.Tensor  # [1, T]: the next token where trained, else IGNORE_INDEX
    n_targets: int
    n_tokens: int
    lengths: list[int]  # the packed sequences' lengths, in order (attention.py's boundaries)


def shifted_targets(r: Rendered) -> list[int]:
    """What each position is trained to predict: the next token's label, within its sequence."""
    out: list[int] = []
    for seq in r.sequences():
        out += seq.labels[1:] + [IGNORE_INDEX]
    return out


def position_ids(r: Rendered) -> list[int]:
    """0, 1, 2, ... restarting at each sequence."""
    return [p for seq in r.sequences() for p in range(len(seq))]


def n_targets(r: Rendered) -> int:
    """Trained tokens of one example, as the loss counts them."""
    return sum(1 for t in shifted_targets(r) if t != IGNORE_INDEX)


def pack(examples: list[Rendered], max_tokens: int) -> list[Packed]:
    """Greedy, order-preserving packing of the examples' sequences into rows of at most
    `max_tokens` tokens (a sequence longer than that gets a row of its own)."""
    rows: list[list[Rendered]] = []
    size = 0
    for seq in (s for r in examples for s in r.sequences()):
        if rows and size + len(seq) <= max_tokens:
            rows[-1].append(seq)
            size += len(seq)
        else:
            rows.append([seq])
            size = len(seq)
    return [_row(row) for row in rows]


def _row(row: list[Rendered]) -> Packed:
    ids: list[int] = []
    pos: list[int] = []
    tgt: list[int] = []
    for r in row:
        ids += r.input_ids
        pos += position_ids(r)
        tgt += shifted_targets(r)
    n = sum(1 for t in tgt if t != IGNORE_INDEX)
    lengths = [len(r) for r in row]
    return Packed(torch.tensor([ids]), torch.tensor([pos]), torch.tensor([tgt]), n, len(ids), lengths)
