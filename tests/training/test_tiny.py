"""tuneforge-tiny: built offline, deterministically, atomically; a real HF chat model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tuneforge.training import tiny
from tuneforge.training.tiny import TINY_NAME, ensure_tiny_model, tiny_dir_name


def _digest(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_build_is_deterministic_and_idempotent(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = ensure_tiny_model(tmp_path)
    assert again == tmp_path / tiny_dir_name() and again.name.startswith(TINY_NAME + "-v")
    assert _digest(again) == _digest(tiny_model_dir)
    assert "model.safetensors" in _digest(again)
    # A second call reuses the directory as is.
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime


def test_concurrent_builds_leave_one_valid_directory(tmp_path: Path, tiny_model_dir: Path) -> None:
    code = "import sys; from pathlib import Path; from tuneforge.training.tiny import ensure_tiny_model; print(ensure_tiny_model(Path(sys.argv[1])))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(tmp_path / tiny_dir_name())] * 2
    with ThreadPoolExecutor(2) as pool:  # and threads in one process
        paths = list(pool.map(lambda d: ensure_tiny_model(tmp_path / d), ["a", "b"]))
    assert _digest(paths[0]) == _digest(paths[1]) == _digest(tiny_model_dir)
    paths = [tmp_path / tiny_dir_name()]
    assert _digest(paths[0]) == _digest(tiny_model_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", tiny_dir_name()]  # no temp dirs left


def test_a_changed_builder_builds_a_new_directory_and_keeps_the_old_one(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    """A data dir built by an older builder must not keep serving a stale model, and adapters
    trained on the older one (their tuneforge.json names its absolute path) must still find it."""
    import shutil

    from transformers import AutoTokenizer

    old = tmp_path / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, old)  # as an earlier build left it
    before = _digest(old)

    # the template changes: a new directory with the new template; the old one untouched
    monkeypatch.setattr(tiny, "CHAT_TEMPLATE", tiny.CHAT_TEMPLATE.replace("# Tools", "# Functions"))
    new = ensure_tiny_model(tmp_path)
    assert new != old and new.name == tiny_dir_name() and new.name.startswith(TINY_NAME + "-v1-")
    assert "# Functions" in AutoTokenizer.from_pretrained(new).chat_template
    assert _digest(old) == before
    assert "# Tools" in AutoTokenizer.from_pretrained(old).chat_template

    # the build code changes (version bump): yet another directory
    monkeypatch.setattr(tiny, "TINY_BUILD_VERSION", 2)
    newer = ensure_tiny_model(tmp_path)
    assert newer.name.startswith(TINY_NAME + "-v2-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old.name, new.name, newer.name])
    assert _digest(old) == before


def test_loads_offline_as_a_chat_model(tiny_model_dir: Path, tiny_tokenizer) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert 2 <= config["num_hidden_layers"] <= 4
    assert config["max_position_embeddings"] >= 1024
    assert len(tok) <= 2048
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"location": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 22}'},
        {"role": "assistant", "content": "It is 22 degrees."},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call><|im_end|>'
        in text
    )
    assert '<tool_response>\n{"temperature": 22}\n</tool_response><|im_end|>' in text
    assert '"name": "get_weather"' in text.split("</tools>")[0]
    assert text.endswith("<|im_start|>assistant\nIt is 22 degrees.<|im_end|>\n")
    prompt = tok.apply_chat_template(messages[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")

    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level BPE round-trips exactly
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok))
