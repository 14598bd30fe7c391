"""Attention for packed rows: each sequence attends causally to itself, computed per sequence.

transformers expresses packing (position_ids that restart) as one T x T block-diagonal mask, and
torch's sdpa then computes every one of the T² scores, most of them masked: on 8 chat examples
(~500 tokens) of SmolLM2 that was about 40% of a LoRA step on CPU. Per sequence, with `is_causal`,
only the needed half of each L² block is computed. On CPU the scores run in fp32: torch's bf16 CPU
flash kernel was ~2.5x slower than fp32 at these sizes (AVX512-BF16 EPYC, fwd+bwd, measured).

The trainer loads its model with `attn_implementation=PACKED_SDPA` and passes the row's sequence
boundaries as `cu_seq_lens_q` (transformers' name for them, a CPU tensor). Any other call (no
boundaries: generation, a padded batch) and anything this path does not model (sliding windows
longer than a sequence, soft-capping, attention sinks, position biases) goes to transformers' own
sdpa with its mask, unchanged.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F

PACKED_SDPA = "tuneforge_packed_sdpa"
# kwargs that change what attention computes; present and set, they take transformers' sdpa
_UNMODELLED = ("softcap", "s_aux", "sinks", "position_bias")


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """(attn_output [B, T, heads, head_dim], None), as transformers' attention functions return."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    lengths = _lengths(bounds) if bounds is not None and query.shape[0] == 1 else None
    window = kwargs.get("sliding_window")
    if (
        lengths is None
        or sum(lengths) != query.shape[2]
        or key.shape[2] != query.shape[2]
        or not (is_causal if is_causal is not None else getattr(module, "is_causal", True))
        or (window is not None and max(lengths) > window)
        or any(kwargs.get(k) is not None for k in _UNMODELLED)
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    dtype, cpu = query.dtype, query.device.type == "cpu"
    if cpu:  # fp32 scores, also under bf16 autocast (which would cast sdpa's inputs to bf16)
        query, key, value = query.float(), key.float(), value.float()
    gqa = query.shape[1] != key.shape[1]
    with torch.autocast(query.device.type, enabled=not cpu and torch.is_autocast_enabled(query.device.type)):
        outs = [
            F.scaled_dot_product_attention(
                q,
                k,
                v,
                dropout_p=dropout if module.training else 0.0,
                is_causal=True,
                scale=scaling,
                enable_gqa=gqa,
            )
            for q, k, v in zip(
                query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2)
            )
        ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.to(dtype).transpose(1, 2).contiguous(), None


def _lengths(bounds) -> list[int]:
    edges = bounds.tolist() if isinstance(bounds, torch.Tensor) else list(bounds)
    return [b - a for a, b in pairwise(edges)]


def cu_seq_lens(lengths: list[int]) -> torch.Tensor:
    """Sequence boundaries of a packed row: [0, l0, l0 + l1, ...] (int32, on CPU)."""
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def register() -> str:
    """Make PACKED_SDPA a valid `attn_implementation` (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    # the fallback (generation, padded batches) needs sdpa's masks
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


__all__ = ["PACKED_SDPA", "cu_seq_lens", "packed_sdpa", "register"]
