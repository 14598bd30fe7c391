"""Mixed-adapter LoRA in a constant number of ops per layer (the punica / S-LoRA idea, plain torch).

PEFT's mixed batch (`adapter_names=`) runs, in every LoRA layer, one gather + two small matmuls +
one scatter per distinct adapter in the batch: with 8 adapters that is ~40 tiny kernels per layer
per decode step, and the step's cost grows with the number of adapters. Here the adapters present
in the batch are concatenated once per batch composition (not per step):

    A_cat = [A_1; A_2; …]                 (R, in)    R = sum of their ranks
    B_cat = [s_1·B_1, s_2·B_2, …]          (out, R)   s = LoRA scaling, folded in

and each layer adds `((x @ A_catᵀ) * row_mask) @ B_catᵀ` to the base output: two matmuls and a
multiply whatever the number of adapters. `row_mask` (rows, R) is 1 on the columns of the row's
own adapter and 0 elsewhere, so a row gets exactly its adapter's update (zeros for base rows). A
batch of one adapter needs no mask. The extra work (every row times every present adapter's rank)
is small next to the base matmuls as long as R is small against the hidden size.

Only vanilla LoRA on Linear layers is handled (no DoRA or other variants, no LoRA bias, no
modules_to_save or trainable tokens): `enabled` says so, and the worker falls back to PEFT's
`adapter_names` path otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch; a row's slot otherwise


class _Stack:
    __slots__ = ("a", "b")

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b


class BatchedLoRA:
    def __init__(self, model: torch.nn.Module):
        self._model = model
        self._layers: list[Any] = []
        self._present: tuple[str, ...] = ()
        self._stacks: dict[int, _Stack | None] = {}
        self._ranks: dict[str, int] = {}
        self._mask: torch.Tensor | None = None  # (rows, 1, R), None: every row the same adapter
        self._active = False  # this forward adds LoRA updates at all
        self._dtype = torch.float32
        self._key: tuple[str, ...] = ()  # the rows' slots the mask was built for
        self.enabled = False  # False: the layers run PEFT's own forward
        self.refresh()

    # ---- structure (after an adapter was attached or detached) ---------------------------------
    def refresh(self) -> None:
        """Find the LoRA layers (attaching an adapter may add some) and route them through here."""
        from peft.tuners.lora.layer import Linear as LoraLinear

        self._layers = [m for m in self._model.modules() if isinstance(m, LoraLinear)]
        for layer in self._layers:
            if not getattr(layer, "_tuneforge_batched", False):
                layer.forward = _bound(self, layer)
                layer._tuneforge_batched = True
        self._present, self._key = (), ()  # stacks are rebuilt at the next prepare()
        self.enabled = self._supported()

    def _supported(self) -> bool:
        from peft.tuners.lora.layer import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        for m in self._model.modules():
            if isinstance(m, AuxiliaryTrainingWrapper):
                return False
            if isinstance(m, LoraLayer) and m not in self._layers and (m.lora_A or m.lora_embedding_A):
                return False  # LoRA on an embedding / conv layer
        for layer in self._layers:
            if layer.lora_variant or any(layer.use_dora.values()):
                return False
            if any(b.bias is not None for b in layer.lora_B.values()):
                return False
        return True

    # ---- per forward ---------------------------------------------------------------------------
    def prepare(self, slots: list[str], device: torch.device) -> None:
        """Set the rows' adapters (PEFT slot names, BASE for none) for the next forward."""
        key = tuple(slots)
        if key == self._key and self._present:  # the batch did not change since the last step
            return
        present = tuple(sorted({s for s in slots if s != BASE}))
        self._active, self._key = bool(present), key
        if not present:
            self._mask = None
            return
        if present != self._present:
            self._build(present)
        if len(present) == 1 and BASE not in slots:
            self._mask = None
            return
        offsets, off = {}, 0
        for s in present:
            offsets[s] = off
            off += self._ranks[s]
        mask = torch.zeros((len(slots), 1, off), device=device, dtype=self._dtype)
        for i, s in enumerate(slots):
            if s != BASE:
                mask[i, 0, offsets[s] : offsets[s] + self._ranks[s]] = 1
        self._mask = mask

    def _build(self, present: tuple[str, ...]) -> None:
        # A slot's columns have the same place in every layer: its largest rank over the layers,
        # zero-padded where a layer has a smaller rank or no update for it (zeros add nothing).
        self._ranks = {
            s: max((layer.r[s] for layer in self._layers if s in layer.lora_A), default=0) for s in present
        }
        self._stacks = {}
        self._dtype = torch.float32
        for layer in self._layers:
            a_parts, b_parts, any_here = [], [], False
            for s in present:
                r = self._ranks[s]
                if s in layer.lora_A:
                    a = layer.lora_A[s].weight
                    b = layer.lora_B[s].weight * layer.scaling[s]
                    pad = r - a.shape[0]
                    if pad:
                        a = torch.cat([a, a.new_zeros((pad, a.shape[1]))])
                        b = torch.cat([b, b.new_zeros((b.shape[0], pad))], dim=1)
                    any_here = True
                else:
                    w = layer.base_layer.weight
                    a = w.new_zeros((r, layer.in_features))
                    b = w.new_zeros((layer.out_features, r))
                a_parts.append(a)
                b_parts.append(b)
                self._dtype = a.dtype
            self._stacks[id(layer)] = (
                _Stack(
                    torch.cat(a_parts).detach().contiguous(), torch.cat(b_parts, dim=1).detach().contiguous()
                )
                if any_here
                else None
            )
        half = self._compute_dtype()
        if half is not None:
            self._dtype = half
            for stack in self._stacks.values():
                if stack is not None:
                    stack.a, stack.b = stack.a.to(self._dtype), stack.b.to(self._dtype)
        self._present = present

    def _compute_dtype(self) -> torch.dtype | None:
        """On a GPU, the base model's half precision (bf16) for the stacked adapters too: PEFT
        keeps adapter weights in fp32, and fp32 matmuls there run at a fraction of the tensor
        cores' rate. On CPU the adapters stay as loaded (fp32), as they always were."""
        w = self._layers[0].base_layer.weight if self._layers else None
        if w is None or w.device.type != "cuda" or w.dtype not in (torch.bfloat16, torch.float16):
            return None
        return w.dtype

    def forward(self, layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.enabled or "adapter_names" in kwargs:
            return type(layer).forward(layer, x, *args, **kwargs)  # PEFT's own path
        result = layer.base_layer(x, *args, **kwargs)
        if not self._active:
            return result
        stack = self._stacks.get(id(layer))
        if stack is None:
            return result
        h = F.linear(x.to(stack.a.dtype), stack.a)
        if self._mask is not None:
            h = h * self._mask if h.dim() == 3 else h * self._mask[:, 0]
        return result + F.linear(h, stack.b).to(result.dtype)


def _bound(owner: BatchedLoRA, layer: Any):
    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return owner.forward(layer, x, *args, **kwargs)

    return forward
