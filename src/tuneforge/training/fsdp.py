"""Sharded data parallelism for full fine-tunes: PyTorch's FSDP2 (`fully_shard`), one unit per
decoder layer plus the root (embeddings, final norm, output layer: tied weights stay in one unit).

Each rank keeps 1/N of every weight (a DTensor sharded on dim 0), so its gradients and Adam moments
are 1/N too; a layer's full weights exist only while its forward or backward runs (all-gathered,
then freed). Backward reduce-scatters each layer's gradients with a plain SUM (divide factor 1):
the trainer already divides the loss by the whole step's label tokens, as in the DDP-style path.
It runs on CPU with gloo (gloo has reduce_scatter_tensor / all_gather_into_tensor) and on CUDA
with nccl.

What leaves a rank is always whole: `full_weights` and `full_state` all-gather (every rank must
call them, in the same order) and keep the result on rank 0 only, in exactly the layout a
one-process run writes (the model's own parameter names; the optimizer's int-keyed state_dict), so
checkpoints, final models, serving, export and a resume with any number of ranks or either mode
read them unchanged. `place_state` is the way back: every rank reads the full tensors and keeps
its own shard (no communication).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from tuneforge.training import checkpoints as ckpt


def shard(model: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """`model` sharded in place over the default process group (`world` ranks)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # SUM, not FSDP's default mean (and no AVG/PREMUL_SUM op: gloo has neither)
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return model


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks (transformers names their classes in `_no_split_modules`)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no decoder layers to shard (no _no_split_modules)")
    return layers


def reshard(model: torch.nn.Module) -> None:
    """Every unit back to its shards (the root stays gathered after a forward without backward),
    so the module's registered parameters are the sharded ones."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def local_numel(tensors: Any) -> int:
    """Elements this rank stores of `tensors` (its shards of DTensors)."""
    return sum((t.to_local() if isinstance(t, DTensor) else t).numel() for t in tensors)


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor, on CPU (an all-gather for a DTensor: every rank must call it)."""
    t = t.detach()
    return (t.full_tensor() if isinstance(t, DTensor) else t).cpu()


def full_weights(model: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor] | None:
    """The model's whole state_dict (what `save_pretrained` writes), kept where `keep`; tied
    weights are gathered once and stay one tensor."""
    reshard(model)
    gathered: dict[int, torch.Tensor | None] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in gathered:
            full = _full(t)
            gathered[id(t)] = full if keep else None  # (elsewhere: gathered, then dropped)
        if keep:
            out[name] = gathered[id(t)]  # type: ignore[assignment]
    return out if keep else None


def full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, keep: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(trainable weights, optimizer state_dict), whole, kept where `keep`."""
    reshard(model)
    weights = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            full = _full(p)
            if keep:
                weights[name] = full
    sd = optimizer.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for i in sorted(sd["state"]):
        entry = {}
        for key in sorted(sd["state"][i]):
            value = sd["state"][i][key]
            entry[key] = _full(value) if isinstance(value, torch.Tensor) else value
        if keep:
            state[i] = entry
    if not keep:
        return None
    return weights, {"state": state, "param_groups": sd["param_groups"]}


def place_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
) -> None:
    """Whole trainable weights and optimizer state (as `full_state` gives them, or a one-process
    run saved them) into this rank's shards."""
    reshard(model)
    params = ckpt.matching_params(model, weights)
    with torch.no_grad():
        for name, value in weights.items():
            p = params[name]
            p.to_local().copy_(_shard_like(p, value).to_local())
    ordered = [p for group in optimizer.param_groups for p in group["params"]]  # the int keys
    state = {
        i: {
            key: _shard_like(ordered[i], v) if isinstance(v, torch.Tensor) and v.dim() else v
            for key, v in entry.items()
        }
        for i, entry in optimizer_state["state"].items()
    }
    optimizer.load_state_dict({"state": state, "param_groups": optimizer_state["param_groups"]})


def _shard_like(p: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """`full` laid out as the DTensor `p` is, this rank's part taken locally (no communication)."""
    if not isinstance(p, DTensor):
        return full
    full = full.to(device=p.to_local().device, dtype=full.dtype)
    return distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)


def clip_grad_norm_(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ over sharded gradients: the norm of the whole gradient (partial norms
    combined across ranks), every shard scaled by the same factor."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
