"""`merged`: full Hugging Face weights (safetensors) that `AutoModelForCausalLM.from_pretrained`
loads alone, with the tokenizer, chat template and generation config (stop ids)."""

from __future__ import annotations

from pathlib import Path

from tuneforge.export.common import TORCH_DTYPES, copy_tokenizer, load_merged
from tuneforge.export.source import ExportSource


def write_merged(source: ExportSource, out: Path, dtype: str) -> None:
    import torch

    model = load_merged(source).to(getattr(torch, TORCH_DTYPES[dtype]))
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out, safe_serialization=True)
    copy_tokenizer(source, out)  # after: the trained generation config wins over the base's
