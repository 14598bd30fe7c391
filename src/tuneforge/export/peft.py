"""`peft`: the LoRA adapter as trained, its tokenizer and chat template, and a README naming the
base model it attaches to (the adapter alone is useless without it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tuneforge.export.common import copy_tokenizer
from tuneforge.export.source import ExportSource

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def write_peft(source: ExportSource, out: Path) -> None:
    for name in ADAPTER_FILES:
        shutil.copy2(source.path / name, out / name)
    copy_tokenizer(source, out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "README.md").write_text(readme(source, config))


def readme(source: ExportSource, config: dict) -> str:
    local = Path(source.base_source).is_absolute()
    where = (
        f"a local directory on the server that trained it: `{source.base_source}`"
        if local
        else f"the Hugging Face model `{source.base_source}`"
    )
    return f"""# {source.name}

A LoRA adapter (PEFT, r={config.get("r")}, alpha={config.get("lora_alpha")}) exported by tuneforge.

- **Base model:** `{source.base_name}`
- **Base model source:** {where}

`adapter_config.json` names that source as `base_model_name_or_path`; on another machine, point
it at your copy of the same base model (identical weights), then:

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("this-directory")
tokenizer = AutoTokenizer.from_pretrained("this-directory")   # with the trained chat template
```

The tokenizer files carry the chat template the model was trained with and
`generation_config.json` its stop token ids: generate with both, or the model will not stop.
"""
