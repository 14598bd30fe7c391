"""Batch surgery on a left-padded KV cache, so sequences can join and leave between decode steps.

Every row's tokens end at the same column (left padding); `mask` says which columns are real.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def merge(
    a: DynamicCache, mask_a: torch.Tensor, b: DynamicCache, mask_b: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Stack two batches: the shorter one is padded on the left to the longer one's length."""
    la, lb = mask_a.shape[1], mask_b.shape[1]
    width = max(la, lb)

    def pad(t: torch.Tensor, n: int) -> torch.Tensor:
        if n == 0:
            return t
        shape = list(t.shape)
        shape[-2] = n
        return torch.cat([t.new_zeros(shape), t], dim=-2)

    layers = []
    for (ka, va), (kb, vb) in zip(_layers(a), _layers(b), strict=True):
        layers.append(
            (
                torch.cat([pad(ka, width - la), pad(kb, width - lb)], dim=0),
                torch.cat([pad(va, width - la), pad(vb, width - lb)], dim=0),
            )
        )
    mask = torch.cat(
        [
            torch.nn.functional.pad(mask_a, (width - la, 0)),
            torch.nn.functional.pad(mask_b, (width - lb, 0)),
        ],
        dim=0,
    )
    return DynamicCache(ddp_cache_data=layers), mask


def select(cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """Keep only rows `keep`, then drop the leading columns that are padding in every row."""
    idx = torch.tensor(keep, device=mask.device)
    mask = mask.index_select(0, idx)
    real = mask.any(dim=0).nonzero()
    start = int(real[0]) if len(real) else mask.shape[1]
    layers = [
        (k.index_select(0, idx)[..., start:, :], v.index_select(0, idx)[..., start:, :])
        for k, v in _layers(cache)
    ]
    return DynamicCache(ddp_cache_data=layers), mask[:, start:]
