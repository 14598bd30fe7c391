"""Export formats from tuneforge-tiny: a LoRA adapter (random, non-zero B: no training needed)
exported as peft, merged and GGUF gives the same greedy tokens as the adapter it came from; the
GGUF's metadata carries the tokenizer, stop tokens and chat template; the Modelfile's TEMPLATE
renders conversations exactly as the training template; what cannot convert is refused before
anything is written."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest
import torch

from tests.export.gotemplate import render as go_render
from tests.training.helpers import greedy, prompt
from tuneforge.errors import InvalidRequest
from tuneforge.export import ExportSource, export
from tuneforge.export.modelfile import parse_template
from tuneforge.services.export import tar_stream

PROMPTS = ["What is the capital of France?", "Tell me a story.", "2+2?"]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": " spaced\nlines "},
    ],
]


@pytest.fixture(scope="module")
def tiny_lora(tiny_base, tmp_path_factory) -> ExportSource:
    """A servable LoRA dir laid out as training writes it (adapter, tokenizer, generation config)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    model = get_peft_model(
        base,
        LoraConfig(
            r=8,
            lora_alpha=16,
            init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        ),
    )
    path = tmp_path_factory.mktemp("lora") / "final"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(path)
    GenerationConfig.from_pretrained(tiny_base).save_pretrained(path)
    return ExportSource(
        name="ft:tuneforge-tiny:org-x:t:abcd1234",
        path=path,
        kind="lora",
        base_name="tuneforge-tiny",
        base_source=str(tiny_base),
    )


def greedy_all(model, tok, n: int = 12) -> list[list[int]]:
    return [greedy(model, tok, q, max_new_tokens=n) for q in PROMPTS]


@pytest.fixture(scope="module")
def reference(tiny_lora):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(tiny_lora.path).eval()
    return greedy_all(model, AutoTokenizer.from_pretrained(tiny_lora.path))


def test_merged_loads_alone_and_answers_like_the_adapter(tiny_lora, reference, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export(tiny_lora, "merged", tmp_path / "merged", dtype="f32")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_lora.path).chat_template
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert greedy_all(model, tok) == reference


@pytest.mark.parametrize("dtype,quant", [("f32", None), ("f16", None), ("bf16", None), (None, "q8_0")])
def test_gguf_reads_back_with_transformers(tiny_lora, reference, tmp_path, dtype, quant):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export(tiny_lora, "gguf", tmp_path / "gguf", dtype=dtype, quant=quant)
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf"]
    model = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf").eval()
    tok = AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
    ours = AutoTokenizer.from_pretrained(tiny_lora.path)
    text = "<|im_start|>user\nHello, wörld! <tool_call>x</tool_call><|im_end|>"
    assert tok(text)["input_ids"] == ours(text)["input_ids"]
    if dtype == "f32":
        assert greedy_all(model, tok) == reference
        return
    # Rounded weights: a random model's near-flat logits can flip greedy picks, so compare the
    # logits themselves (the trained model's exact answers in f16 are checked end to end).
    from peft import AutoPeftModelForCausalLM

    exact = AutoPeftModelForCausalLM.from_pretrained(tiny_lora.path).eval()
    for q in PROMPTS:
        enc = prompt(ours, q)
        with torch.no_grad():
            a, b = exact(**enc).logits[0, -1], model(**enc).logits[0, -1]
        assert ((a - b).norm() / a.norm()).item() < {"f16": 0.01, "bf16": 0.03, None: 0.05}[dtype]


def test_gguf_metadata_has_tokenizer_stop_tokens_and_template(tiny_lora, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    out = export(tiny_lora, "gguf", tmp_path / "gguf", dtype="f16")
    reader = gguf.GGUFReader(out / "model.gguf")
    tok = AutoTokenizer.from_pretrained(tiny_lora.path)

    def value(key):
        return reader.fields[key].contents()

    assert value("general.architecture") == "qwen2"
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.chat_template") == tok.chat_template
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == len(tok) and value("tokenizer.ggml.merges")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert value("tokenizer.ggml.eos_token_id") == im_end
    assert value("tokenizer.ggml.padding_token_id") == tok.pad_token_id != im_end
    assert value("tokenizer.ggml.token_type")[im_end] == gguf.TokenType.CONTROL
    assert (
        value("tokenizer.ggml.token_type")[tok.convert_tokens_to_ids("<tool_call>")]
        == gguf.TokenType.USER_DEFINED
    )
    assert 'PARAMETER stop "<|im_end|>"' in (out / "Modelfile").read_text()


def test_modelfile_template_renders_like_the_training_template(tiny_lora, tmp_path):
    from transformers import AutoTokenizer

    out = export(tiny_lora, "gguf", tmp_path / "gguf", dtype="f16")
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n")
    template = parse_template(modelfile)
    assert template == (
        "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    )
    tok = AutoTokenizer.from_pretrained(tiny_lora.path)
    for messages in CONVERSATIONS:
        assert go_render(template, messages) == tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )


def test_default_system_prompt_is_kept(tiny_lora, tmp_path, smollm2_gguf):
    """SmolLM2's template adds a default system prompt when none is given: so must Ollama."""
    import gguf
    from transformers import AutoTokenizer

    template = gguf.GGUFReader(smollm2_gguf).fields["tokenizer.chat_template"].contents()
    src = tmp_path / "src"
    shutil.copytree(tiny_lora.path, src)
    tok = AutoTokenizer.from_pretrained(src)
    tok.chat_template = template
    tok.save_pretrained(src)
    source = ExportSource(**{**tiny_lora.__dict__, "path": src})
    go = parse_template((export(source, "gguf", tmp_path / "gguf", dtype="f16") / "Modelfile").read_text())
    assert "You are a helpful AI assistant named SmolLM" in go
    for messages in CONVERSATIONS:
        assert go_render(go, messages) == tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )


def test_peft_has_adapter_tokenizer_template_and_readme(tiny_lora, tmp_path):
    out = export(tiny_lora, "peft", tmp_path / "peft")
    names = {p.name for p in out.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
        "README.md",
    } <= names
    readme = (out / "README.md").read_text()
    assert "`tuneforge-tiny`" in readme and tiny_lora.base_source in readme


def _refused(source, fmt, out, code=None, **kw) -> str:
    with pytest.raises(InvalidRequest) as err:
        export(source, fmt, out, **kw)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))
    if code:
        assert err.value.code == code
    return err.value.message


def test_unconvertible_models_are_refused_before_writing(tiny_lora, tiny_base, tmp_path):
    # an architecture the GGUF writer does not know
    full = tmp_path / "full"
    shutil.copytree(tiny_base, full)
    config = json.loads((full / "config.json").read_text())
    (full / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen2MoeForCausalLM"]}))
    source = ExportSource("ft:x:o:s:1", full, "full", "tuneforge-tiny", str(tiny_base))
    assert "Qwen2MoeForCausalLM is not supported" in _refused(
        source, "gguf", tmp_path / "a", "unsupported_for_gguf"
    )
    # a chat template Ollama's Go template cannot reproduce (content trimmed, as Llama 3 does)
    src = tmp_path / "trim"
    shutil.copytree(tiny_lora.path, src)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    (src / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (src / "tokenizer_config.json").write_text(json.dumps(cfg))
    trimmed = ExportSource(**{**tiny_lora.__dict__, "path": src})
    assert "Ollama TEMPLATE" in _refused(trimmed, "gguf", tmp_path / "b", "unsupported_chat_template")
    # options that make no sense
    assert "full fine-tune" in _refused(source, "peft", tmp_path / "c")
    assert "gguf format only" in _refused(tiny_lora, "merged", tmp_path / "d", quant="q8_0")
    assert "Unknown dtype" in _refused(tiny_lora, "gguf", tmp_path / "e", dtype="f8")
    assert "Unknown export format" in _refused(tiny_lora, "onnx", tmp_path / "f")


def test_tar_stream_round_trips(tiny_lora, tmp_path):
    out = export(tiny_lora, "peft", tmp_path / "x" / "peft")
    data = b"".join(tar_stream(out, remove=out.parent))
    assert not out.exists()  # removed once streamed
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert "peft/adapter_model.safetensors" in names
        got = tar.extractfile("peft/adapter_config.json").read()
    assert json.loads(got)["r"] == 8


def test_llama_family_gguf_answers_like_the_model(tiny_base, tmp_path):
    """The llama arch (SmolLM2's): q/k rows permuted as llama.cpp expects, head dim as rope
    dimension count; a full fine-tune's weights are exported as they are."""
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(1)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            initializer_range=0.2,
            tie_word_embeddings=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=None,
        )
    ).eval()
    full = tmp_path / "llama"
    model.save_pretrained(full)
    tok.save_pretrained(full)
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).save_pretrained(full)
    source = ExportSource("ft:tiny-llama:o:s:1", full, "full", "tiny-llama", str(full))
    out = export(source, "gguf", tmp_path / "gguf", dtype="f32")
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf").eval()
    assert type(back).__name__ == "LlamaForCausalLM"
    assert greedy_all(back, AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")) == greedy_all(
        model, tok
    )
