"""The bf16-or-fp32 probe: measured once per machine and shape, cached, overridable."""

from __future__ import annotations

import json

import torch

from tuneforge import hardware


def test_probe_measures_once_then_answers_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TUNEFORGE_BF16", raising=False)
    first = hardware.probe_cpu(64, 192)
    assert first["fp32_gflops"] > 0 and first["bf16_gflops"] > 0
    assert first["bf16_fast"] == (first["bf16_gflops"] >= hardware.BF16_MIN_GAIN * first["fp32_gflops"])
    cache = json.loads((tmp_path / "hardware.json").read_text())
    (key,) = cache
    assert hardware.cpu_model() in key and torch.__version__ in key and "64x192" in key
    # the cached answer is the answer (a run and its resume decide alike), even if flipped here
    cache[key]["bf16_fast"] = not first["bf16_fast"]
    (tmp_path / "hardware.json").write_text(json.dumps(cache))
    assert hardware.bf16_is_fast("cpu", 64, 192) is (not first["bf16_fast"])


def test_environment_overrides_the_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TUNEFORGE_BF16", "0")
    assert hardware.bf16_is_fast("cpu", 64) is False
    monkeypatch.setenv("TUNEFORGE_BF16", "1")
    assert hardware.bf16_is_fast("cpu", 64) is True
    assert not (tmp_path / "hardware.json").exists()  # nothing measured


def test_linears_to_bf16_keeps_a_tied_embedding_fp32_and_skips_trainable_weights():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            tie_word_embeddings=True,
        )
    )
    for p in model.parameters():
        p.requires_grad_(False)
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)  # stands in for an adapter
    hardware.linears_to_bf16(model, skip_trainable=True)
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    assert model.model.norm.weight.dtype == torch.float32
