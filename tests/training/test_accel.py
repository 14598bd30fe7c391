"""The GPU path's pieces, checked on CPU: the fused loss computes what the plain path computes
(value, accuracy, gradients; a whole training run too), and the device / memory decisions."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, Qwen2Config

from tests.training.helpers import QA, Recorder, chat, write_jsonl
from tuneforge.training import Hyperparameters, TrainSpec, train
from tuneforge.training.accel import (
    FusedLoss,
    activation_bytes,
    attn_implementation,
    chunked_linear_cross_entropy,
    use_fused_loss,
    want_checkpointing,
)

GB = 1 << 30


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_linear_ce_equals_plain_ce_in_value_accuracy_and_gradients(chunk: int) -> None:
    torch.manual_seed(0)
    n, h, v = 50, 32, 301  # chunks that do not divide the rows
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, v, (n,))

    logits = hidden @ weight.t()
    ref = F.cross_entropy(logits, targets, reduction="sum")
    ref_correct = int((logits.argmax(-1) == targets).sum())
    (ref / 13).backward()  # a scaled loss, as the trainer divides by the step's label count
    ref_gh, ref_gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    loss, correct = chunked_linear_cross_entropy(hidden, weight, targets, chunk=chunk)
    (loss / 13).backward()
    assert int(correct) == ref_correct
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hidden.grad, ref_gh, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(weight.grad, ref_gw, rtol=1e-6, atol=1e-9)


def test_chunked_linear_ce_with_a_frozen_output_layer_gives_only_the_hidden_gradient() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(20, 16, requires_grad=True)
    weight = torch.randn(40, 16)  # frozen (LoRA leaves the output layer alone)
    targets = torch.randint(0, 40, (20,))
    ref = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    (g_ref,) = torch.autograd.grad(ref, hidden)
    loss, _ = chunked_linear_cross_entropy(hidden, weight, targets, chunk=6)
    (g,) = torch.autograd.grad(loss, hidden)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)  # fp32 rounding


def test_chunked_linear_ce_under_no_grad_gives_the_same_loss_and_no_graph() -> None:
    torch.manual_seed(3)
    hidden = torch.randn(30, 16)
    weight = torch.randn(50, 16, requires_grad=True)  # a full fine-tune's output layer
    targets = torch.randint(0, 50, (30,))
    with torch.no_grad():  # evaluation
        loss, correct = chunked_linear_cross_entropy(hidden, weight, targets, chunk=7)
    ref = F.cross_entropy(hidden @ weight.detach().t(), targets, reduction="sum")
    assert not loss.requires_grad
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    assert int(correct) == int(((hidden @ weight.detach().t()).argmax(-1) == targets).sum())


def test_chunked_linear_ce_in_bf16_matches_autocasts_plain_path_closely() -> None:
    # Under mixed precision the matmul runs in bf16 in both paths; softmax and sums in fp32.
    torch.manual_seed(2)
    hidden = torch.randn(64, 64)
    weight = torch.randn(500, 64) * 0.1
    targets = torch.randint(0, 500, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = F.linear(hidden, weight)
    ref = F.cross_entropy(logits.float(), targets, reduction="sum")
    loss, _ = chunked_linear_cross_entropy(hidden, weight, targets, compute_dtype=torch.bfloat16, chunk=16)
    assert abs(float(loss) - float(ref)) / float(ref) < 1e-4


def test_on_cpu_every_speed_choice_is_off_unless_asked() -> None:
    cpu = torch.device("cpu")
    assert attn_implementation(cpu) == "sdpa"
    assert use_fused_loss(cpu, None) is False
    assert use_fused_loss(cpu, True) is True
    assert FusedLoss(cpu, torch.float32).kind == "chunked"  # Liger is a CUDA kernel
    assert use_fused_loss(torch.device("cuda"), None) is True
    assert use_fused_loss(torch.device("cuda"), False) is False
    assert (
        want_checkpointing("auto", cpu, free_bytes=None, activations=10**15, trainable_params=10**9) is False
    )


def _qwen(hidden: int, inter: int, layers: int, heads: int, kv: int) -> Qwen2Config:
    return Qwen2Config(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
    )


def test_auto_gradient_checkpointing_turns_on_only_when_activations_do_not_fit() -> None:
    cuda = torch.device("cuda")
    qwen_1_5b = _qwen(1536, 8960, 28, 12, 2)
    qwen_7b = _qwen(3584, 18944, 28, 28, 4)
    act_small = activation_bytes(qwen_1_5b, 8192)
    act_7b = activation_bytes(qwen_7b, 8192)
    assert 15 * GB < act_small < 40 * GB  # ~3 MB per token at 1.5B: the order the literature gives
    assert act_7b > 2 * act_small
    lora = 20_000_000
    # An H200 with a 1.5B LoRA loaded (~136 GB free): no checkpointing.
    assert not want_checkpointing(
        "auto", cuda, free_bytes=136 * GB, activations=act_small, trainable_params=lora
    )
    # A 7-8B LoRA on an 80 GB card (~64 GB free after 15 GB of bf16 weights): checkpointing.
    assert want_checkpointing("auto", cuda, free_bytes=64 * GB, activations=act_7b, trainable_params=lora)
    # A full fine-tune's gradients and moments (12 bytes per weight) count against the room.
    full = 1_500_000_000
    assert want_checkpointing("auto", cuda, free_bytes=40 * GB, activations=act_small, trainable_params=full)
    assert not want_checkpointing(
        "auto", cuda, free_bytes=40 * GB, activations=act_small, trainable_params=lora
    )
    # Asked for explicitly: as asked, anywhere.
    assert want_checkpointing("on", torch.device("cpu"), free_bytes=None, activations=0, trainable_params=0)
    assert not want_checkpointing("off", cuda, free_bytes=1, activations=act_7b, trainable_params=lora)


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "step_metrics.csv") as fh:
        return [float(r["train_loss"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_training_run_with_the_fused_loss_matches_the_plain_run(
    tiny_model_dir, tmp_path, method, monkeypatch
) -> None:
    """The fused loss (the CUDA default) and gradient checkpointing, forced on CPU: same losses,
    step after step, as the label-logits path (an output layer that trains in a full fine-tune,
    recomputed activations through PEFT's layers). In fp32: under bf16
    the two paths round the logits' gradient at different points (before / after the 1/n scale),
    so they agree to bf16's precision only (the bf16 unit test above)."""
    monkeypatch.setenv("TUNEFORGE_BF16", "0")
    data = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in QA])
    runs = {}
    # (fused loss, gradient checkpointing): plain; the CUDA default; CUDA short of memory
    variants = [(False, "off"), (True, "off")] + ([(True, "on")] if method == "lora" else [])
    for fused, checkpointing in variants:
        spec = TrainSpec(
            base_model=str(tiny_model_dir),
            training_file=data,
            output_dir=tmp_path / f"run-{fused}-{checkpointing}",
            method=method,
            hyperparameters=Hyperparameters(n_epochs=2, batch_size=5),
            device="cpu",
            fused_loss=fused,
            gradient_checkpointing=checkpointing,
        )
        result = train(spec, Recorder())
        assert result.status == "succeeded"
        runs[fused, checkpointing] = _losses(tmp_path / f"run-{fused}-{checkpointing}")
    plain = runs[False, "off"]
    assert len(plain) == 4
    for variant, losses in runs.items():
        assert len(losses) == 4
        for a, b in zip(plain, losses):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (variant, plain, losses)
    assert runs[True, "off"][-1] < runs[True, "off"][0]  # it learns


def test_activation_estimate_reads_a_real_config_file(tiny_model_dir) -> None:
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    assert activation_bytes(cfg, 2048) == 2 * activation_bytes(cfg, 1024) > 0
