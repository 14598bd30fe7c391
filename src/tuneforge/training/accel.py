"""The trainer's GPU speed-ups, each a small decision or function that CPU runs never take.

- attention: FlashAttention-2 when `flash_attn` is importable on CUDA, else PyTorch SDPA; both see
  the packed rows' per-example position_ids and never attend across examples (`batches.py`);
- loss: a fused linear + cross-entropy over the label positions that never materialises the
  (tokens x vocabulary) logits: Liger's Triton kernel when importable (and new enough to report
  token accuracy), else `chunked_linear_cross_entropy` below in plain torch;
- gradient checkpointing: "auto" turns it on only when the micro-batch's estimated activations
  would not fit in the GPU memory left after weights, gradients and optimizer moments;
- torch.compile of each decoder layer, only when asked (compilation costs tens of seconds, which
  a short job never wins back).

On CPU every decision is "off", so CPU results stay exactly what they were (the trainer's tests
compare them bit for bit). The fused loss computes the same function as the plain path (tested on
CPU: value and gradients).
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F

GradientCheckpointing = Literal["auto", "on", "off"]

# Logits held at once by the chunked loss: 2^27 fp32 values (512 MB); a 152k vocabulary gives
# chunks of ~880 label tokens.
CHUNK_ELEMENTS = 1 << 27
# Share of the free memory the activations may take before checkpointing is turned on: the rest
# is the allocator's fragmentation, the loss's chunk buffers and the attention kernels' workspace.
ACTIVATION_HEADROOM = 0.75


def attn_implementation(device: torch.device) -> str:
    """What transformers should attend with: FlashAttention-2 (varlen over the packed row) when it
    is installed and we are on CUDA, else SDPA (a block-diagonal causal mask from position_ids)."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def use_fused_loss(device: torch.device, requested: bool | None) -> bool:
    """None: on CUDA only. On CPU the label-only logits (sft.py) are already cheap and the plain
    path is what the bit-exact resume tests pin."""
    return device.type == "cuda" if requested is None else requested


# --- fused linear + cross-entropy ---------------------------------------------------------------


class _ChunkedLinearCE(torch.autograd.Function):
    """sum(CE(hidden @ weight.T, targets)) and the argmax hit count, chunk by chunk.

    The gradients are computed in the forward pass (as Liger does), chunk by chunk, so no more
    than one chunk's logits exist at any time and backward only scales them: d loss / d logits =
    softmax - onehot."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, compute_dtype, chunk, grads):  # type: ignore[override]
        n = hidden.shape[0]
        w = weight.to(compute_dtype)
        # `grads`: grad mode as the caller had it (forward itself runs without): an evaluation
        # under no_grad computes no gradients, though a full fine-tune's weight requires them.
        want_h, want_w = grads and hidden.requires_grad, grads and weight.requires_grad
        grad_h = torch.empty_like(hidden) if want_h else None
        acc = torch.promote_types(compute_dtype, torch.float32)  # fp32, or fp64 when given fp64
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        for s in range(0, n, chunk):
            h = hidden[s : s + chunk].to(compute_dtype)
            t = targets[s : s + chunk]
            logits = F.linear(h, w).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            loss += (lse - logits.gather(1, t[:, None])[:, 0]).sum()
            correct += (logits.argmax(-1) == t).sum()
            if want_h or want_w:
                g = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
                g[torch.arange(len(t), device=g.device), t] -= 1.0
                g = g.to(compute_dtype)
                if grad_h is not None:
                    grad_h[s : s + chunk] = (g @ w).to(hidden.dtype)
                if grad_w is not None:
                    grad_w += (g.t() @ h).to(acc)
        ctx.save_for_backward(
            grad_h if grad_h is not None else torch.empty(0),
            grad_w if grad_w is not None else torch.empty(0),
        )
        ctx.want = (want_h, want_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        want_h, want_w = ctx.want
        gh = grad_h * grad_loss.to(grad_h.dtype) if want_h else None
        gw = (grad_w * grad_loss).to(ctx.weight_dtype) if want_w else None
        return gh, gw, None, None, None, None


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    compute_dtype: torch.dtype | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, correct argmax count) of `hidden` [N, H] through the output layer
    `weight` [V, H] against `targets` [N] (every target counted: pass label positions only).
    Matmuls in `compute_dtype` (bf16 under mixed precision), softmax and sums in fp32."""
    dtype = compute_dtype or weight.dtype
    size = chunk or max(1, CHUNK_ELEMENTS // weight.shape[0])
    loss, correct = _ChunkedLinearCE.apply(hidden, weight, targets, dtype, size, torch.is_grad_enabled())
    return loss, correct


def _liger_loss() -> Any | None:
    """Liger's fused loss module (sum reduction, with token accuracy), or None."""
    if importlib.util.find_spec("liger_kernel") is None:
        return None
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except Exception:  # an install that cannot load (no triton, wrong torch): the plain path
        return None
    if "return_token_accuracy" not in inspect.signature(LigerFusedLinearCrossEntropyLoss).parameters:
        return None
    return LigerFusedLinearCrossEntropyLoss(
        reduction="sum", return_token_accuracy=True, accum_dtype=torch.float32
    )


class FusedLoss:
    """The label positions' (loss sum, correct count) from the final hidden states: Liger on CUDA
    when available, else the chunked torch version. `kind` says which (for logs, the benchmark)."""

    def __init__(self, device: torch.device, compute_dtype: torch.dtype):
        self.compute_dtype = compute_dtype
        self.liger = _liger_loss() if device.type == "cuda" else None
        self.kind = "liger" if self.liger is not None else "chunked"

    def __call__(self, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
        if self.liger is not None:
            try:
                out = self.liger(weight.to(self.compute_dtype), hidden.to(self.compute_dtype), targets)
            except Exception as exc:  # a kernel that does not build here: the same loss, in torch
                self.liger, self.kind = None, f"chunked (liger failed: {type(exc).__name__})"
            else:
                correct = (out.token_accuracy.float() * len(targets)).round().long()
                return out.loss.float(), correct
        return chunked_linear_cross_entropy(hidden, weight, targets, compute_dtype=self.compute_dtype)


def fused_row_loss(
    model, input_ids, position_ids, keep, targets, *, bf16: bool, loss: FusedLoss, **model_kwargs: Any
) -> tuple[torch.Tensor, int]:
    """What sft's `_forward` computes — (summed CE, correct count) at the `keep` positions of a
    packed row — without the output layer's logits: the decoder's hidden states at those positions
    go through the fused loss with the output layer's weight. `model_kwargs`: the row's sequence
    boundaries for attention.py."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = base.get_decoder()(
            input_ids=input_ids, position_ids=position_ids, use_cache=False, **model_kwargs
        )
    h = hidden.last_hidden_state[0].index_select(0, keep)
    head = base.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("the fused loss handles output layers without bias only")
    loss_sum, correct = loss(h, head.weight, targets)
    return loss_sum, int(correct.item())


# --- gradient checkpointing ---------------------------------------------------------------------


def activation_bytes(config, tokens: int) -> int:
    """Estimated activations a decoder keeps for backward over `tokens` tokens (bf16 autocast,
    fp32 residual stream, SDPA/flash attention so no (T x T) scores). Per layer and token: the
    residual and norm inputs (fp32), q/k/v and their rotated copies, the attention output, and the
    MLP's gate, up, activation and product (the Megatron accounting, Korthikanti et al. 2022)."""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    h = int(cfg.hidden_size)
    inter = int(getattr(cfg, "intermediate_size", 0) or 4 * h)
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads) * (h // heads)
    layers = int(cfg.num_hidden_layers)
    per_token_layer = 4 * 2 * h + 2 * (6 * h + 4 * kv + 4 * inter)
    return tokens * layers * per_token_layer


def want_checkpointing(
    mode: GradientCheckpointing,
    device: torch.device,
    *,
    free_bytes: int | None,
    activations: int,
    trainable_params: int,
) -> bool:
    """ "on"/"off" as asked; "auto": only on CUDA, and only when the activations would not fit in
    the free memory left after the trainable weights' fp32 gradients and AdamW's two moments
    (allocated at the first step, after the model is on the device)."""
    if mode != "auto":
        return mode == "on"
    if device.type != "cuda" or free_bytes is None:
        return False
    left = free_bytes - 12 * trainable_params
    return activations > ACTIVATION_HEADROOM * left


def free_memory(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def compile_layers(model) -> int:
    """torch.compile each decoder layer (dynamic shapes: packed rows vary in length); layer by
    layer, as torchtune does, so one graph break costs one layer, not the model. How many."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None) or []
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
