"""Synthetic LoRA fine-tunes for benchmarks and tests: a PEFT LoRA on a base model with seeded
random weights, saved in the servable layout (adapter + tokenizer + chat template + tuneforge.json).
Different seeds give models that answer differently; no training needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def make_random_adapter(base_dir: Path, out_dir: Path, seed: int, rank: int = 8, scale: float = 0.5) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(
        base,
        LoraConfig(r=rank, lora_alpha=rank * 2, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for f in Path(base_dir).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out_dir / f.name)
    (out_dir / "tuneforge.json").write_text(
        json.dumps(
            {"format": 1, "kind": "lora", "base_model": str(base_dir), "step": 1, "epoch": 1, "metrics": {}}
        )
    )
    return out_dir
