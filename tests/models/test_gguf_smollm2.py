"""A real model in the suite: SmolLM2-135M-Instruct as published, from its GGUF file.

`models add` registers the file; the first resolve de-quantises it once into a cached Hugging Face
directory (the second does not rebuild); the tokenizer is the file's own (pad `<|im_end|>`, as
published) and so is its ChatML template and eos.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge import gguf
from tuneforge.cli import app
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.db import transaction

pytestmark = pytest.mark.slow  # one de-quantisation: ~20-40 s of CPU


@pytest.fixture
def sqlite_settings(tmp_path):
    from tuneforge.config import Settings

    return Settings(data_dir=tmp_path / "data").resolved()  # one database is enough here


def test_smollm2_gguf_is_added_listed_and_dequantised_once(sqlite_settings, smollm2_gguf, monkeypatch):
    from transformers import AutoTokenizer, GenerationConfig

    settings = sqlite_settings
    env = {"TUNEFORGE_DATA_DIR": str(settings.data_dir)}
    runner = CliRunner()
    result = runner.invoke(app, ["models", "add", "smollm2", str(smollm2_gguf)], env=env)
    assert result.exit_code == 0, result.output
    assert "GGUF file" in result.output and "LlamaForCausalLM" in result.output
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"], env=env).output)
    assert {
        "name": "smollm2",
        "source": str(smollm2_gguf),
        "origin": "store",
        "aliases": [],
        "note": None,
    } in listed

    from tuneforge.cli.models import session_factory

    factory = session_factory(settings)
    resolver = ModelResolver(settings)
    with transaction(factory) as s:
        first = resolver.base(s, "smollm2").source
    assert first.startswith(str(settings.models_dir)) and first != str(smollm2_gguf)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached directory was built again")

    monkeypatch.setattr(gguf, "convert", no_rebuild)
    with transaction(factory) as s:
        assert ModelResolver(settings).base(s, "smollm2").source == first
    assert not [p for p in settings.models_dir.iterdir() if ".tmp-" in p.name]

    tok = AutoTokenizer.from_pretrained(first)
    assert tok.pad_token == "<|im_end|>" and tok.eos_token == "<|im_end|>"  # as published
    text = tok.apply_chat_template(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Yo"},
        ],
        tokenize=False,
    )
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nYo<|im_end|>\n"
    )  # ChatML
    eos = GenerationConfig.from_pretrained(first).eos_token_id
    assert tok.convert_ids_to_tokens(eos if isinstance(eos, int) else eos[0]) == "<|im_end|>"
