"""BatchedLoRA (per-row adapters in a few batched ops per layer) against PEFT's own mixed-batch
forward on tuneforge-tiny: same logits for every row of a batch mixing base rows, adapters of
different ranks and adapters targeting different modules; PEFT's path taken for what it does not
handle (DoRA)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from tuneforge.inference.lora_batch import BASE, BatchedLoRA
from tuneforge.inference.synthetic import make_random_adapter


def _adapter(tiny_dir, out, seed, **config):
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(**config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def peft_model(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_batch")
    paths = [
        make_random_adapter(tiny_dir, root / "r8", seed=1, rank=8),
        make_random_adapter(tiny_dir, root / "r4", seed=2, rank=4),
        _adapter(tiny_dir, root / "q_only", 3, r=6, lora_alpha=3, target_modules=["q_proj"]),
        _adapter(tiny_dir, root / "gate", 4, r=2, lora_alpha=8, target_modules=["gate_proj", "k_proj"]),
    ]
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, paths[0], adapter_name="a1").eval()
    for i, p in enumerate(paths[1:], start=2):
        model.load_adapter(p, adapter_name=f"a{i}")
    return model


def _logits(model, ids, **kw):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits


# float32 logits computed in another order (our batched LoRA vs PEFT's path; oneDNN kernels differ
# between CPUs: AMX/AVX-512 on Intel, AVX2 on AMD) differ by a few ulps of the largest partial sums:
# measured up to 3e-5 on an AMD EPYC. 1e-4 absolute + relative holds with margin on every CPU and is
# still 100x below the 1e-2 that separates two adapters' logits below.
TOL = {"rtol": 1e-4, "atol": 1e-4}


def test_mixed_batch_matches_peft_row_by_row(peft_model):
    lora = BatchedLoRA(peft_model)
    assert lora.enabled
    slots = ["a1", BASE, "a2", "a3", "a4", "a1", "a4", BASE]
    ids = torch.randint(5, 200, (len(slots), 7), generator=torch.Generator().manual_seed(0))
    expected = _logits(peft_model, ids, adapter_names=slots)  # PEFT's own mixed path
    lora.prepare(slots, torch.device("cpu"))
    got = _logits(peft_model, ids)
    torch.testing.assert_close(got, expected, **TOL)
    # The adapters really differ from each other and from base (the comparison means something).
    for a, b in [(0, 1), (0, 2), (2, 3), (3, 4)]:
        assert (expected[a] - expected[b]).abs().max() > 1e-2
    # One adapter for every row (no mask) and an all-base batch.
    for same in (["a3"] * 3, [BASE] * 3):
        lora.prepare(same, torch.device("cpu"))
        torch.testing.assert_close(
            _logits(peft_model, ids[:3]), _logits(peft_model, ids[:3], adapter_names=same), **TOL
        )


def test_lora_bias_falls_back_to_peft(tiny_dir, tmp_path):
    # A LoRA with a bias on B is not handled by BatchedLoRA: PEFT's mixed path answers instead.
    path = _adapter(tiny_dir, tmp_path / "bias", 5, r=4, target_modules=["q_proj"], lora_bias=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, path, adapter_name="a1").eval()
    lora = BatchedLoRA(model)
    assert not lora.enabled
    ids = torch.randint(5, 200, (2, 5), generator=torch.Generator().manual_seed(1))
    slots = ["a1", BASE]
    lora.prepare(slots, torch.device("cpu"))
    out = _logits(model, ids, adapter_names=slots)
    torch.testing.assert_close(out[0], _logits(model, ids[:1])[0], **TOL)  # a1 alone
    with model.disable_adapter():
        torch.testing.assert_close(out[1], _logits(model, ids[1:])[0], **TOL)
    assert (out[0] - out[1]).abs().max() > 1e-3
