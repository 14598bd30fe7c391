"""What an export starts from (a servable model dir as training writes it) and its options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import InvalidRequest

FORMATS = ("peft", "merged", "gguf")
DTYPES = ("f16", "bf16", "f32")
QUANTS = ("q8_0",)
DEFAULT_DTYPE = "f16"  # what llama.cpp and most hub checkpoints ship; f32 for bit-exact checks


@dataclass(frozen=True)
class ExportSource:
    name: str  # the ft: model or checkpoint id
    path: Path  # its servable directory: adapter or full weights, tokenizer, template
    kind: str  # "lora" | "full"
    base_name: str  # the base model as users named it (catalog name or hub id)
    base_source: str  # what the adapter attaches to: a local dir or a hub id


def check_options(source: ExportSource, fmt: str, dtype: str | None, quant: str | None) -> str:
    """Refuse impossible option sets with a clear message; the dtype to use."""
    if fmt not in FORMATS:
        raise InvalidRequest(
            f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.",
            param="format",
            code="invalid_format",
        )
    if dtype is not None and dtype not in DTYPES:
        raise InvalidRequest(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.", param="dtype")
    if quant is not None:
        if quant not in QUANTS:
            raise InvalidRequest(
                f"Unknown quantisation {quant!r}; use one of {', '.join(QUANTS)}.", param="quant"
            )
        if fmt != "gguf":
            raise InvalidRequest("Quantisation applies to the gguf format only.", param="quant")
    if fmt == "peft":
        if source.kind != "lora":
            raise InvalidRequest(
                f"{source.name} is a full fine-tune, not a LoRA adapter: export it as `merged` (or `gguf`).",
                param="format",
            )
        if dtype is not None:
            raise InvalidRequest(
                "A peft export copies the adapter as trained; --dtype applies to merged and gguf.",
                param="dtype",
            )
    return dtype or DEFAULT_DTYPE
