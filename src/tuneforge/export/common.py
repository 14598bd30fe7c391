"""What every format carries besides weights: tokenizer + chat template, generation config, and
the loaded (merged) model for the formats that need full weights."""

from __future__ import annotations

import shutil
from pathlib import Path

from tuneforge.export.source import ExportSource

TORCH_DTYPES = {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}


def copy_tokenizer(source: ExportSource, out: Path) -> None:
    """Tokenizer files and the chat template exactly as trained, and the generation config (the
    stop ids): losing these is what makes exported models talk forever."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source.path).save_pretrained(out)
    if (source.path / "generation_config.json").is_file():
        shutil.copy2(source.path / "generation_config.json", out / "generation_config.json")


def load_merged(source: ExportSource):
    """The fine-tune as one plain transformers model in float32: a LoRA adapter merged into its
    base (merge_and_unload), a full fine-tune as saved."""
    import torch
    from transformers import AutoModelForCausalLM

    if source.kind == "full":
        return AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(source.base_source, dtype=torch.float32)
    return PeftModel.from_pretrained(base, source.path).merge_and_unload()
