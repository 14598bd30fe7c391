"""`gguf`: one `model.gguf` written with the `gguf` package's GGUFWriter (no llama.cpp build), and
an Ollama `Modelfile` beside it.

Supported: the llama and qwen2 families (SmolLM2, Llama 2/3-shaped, Qwen2/2.5, tuneforge-tiny)
with a byte-level BPE tokenizer (gpt2-style vocab + merges). Tensor names come from gguf's
TensorNameMap; llama's q/k projections are permuted as llama.cpp's converter does. The metadata
carries the tokenizer, BOS/EOS/pad/EOT ids and `tokenizer.chat_template`. Every refusal (an
architecture, rope scaling, tokenizer or chat template that cannot be converted) happens in
`plan_gguf`, before any file is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import InvalidRequest
from tuneforge.export.common import load_merged
from tuneforge.export.modelfile import derive, modelfile
from tuneforge.export.source import ExportSource

GGUF_NAME = "model.gguf"
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
# llama.cpp pre-tokenizer names for the split rules a byte-level BPE tokenizer may use.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLITS = {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}


def _cannot(reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"Cannot convert this model to GGUF: {reason}.", param="format", code="unsupported_for_gguf"
    )


@dataclass(frozen=True)
class Vocab:
    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str]


def plan_gguf(source: ExportSource, dtype: str, quant: str | None) -> Callable[[Path], None]:
    """Check everything that can refuse the export, then return what writes it."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(source.path if source.kind == "full" else source.base_source)
    arch = _architecture(config)
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    vocab = _vocab(tokenizer, config.vocab_size)
    template = tokenizer.chat_template
    if not isinstance(template, str):
        raise _cannot("the model has no (single) chat template")
    fmt = derive(
        lambda messages, prompt: tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=prompt
        )
    )
    gen = (
        GenerationConfig.from_pretrained(source.path)
        if (source.path / "generation_config.json").is_file()
        else None
    )
    stop_ids = _stop_ids(tokenizer, gen)
    _tensor_names(config, arch)  # every weight must have a GGUF name

    def write(out: Path) -> None:
        model = load_merged(source)
        _write(
            out / GGUF_NAME, source, config, arch, model, tokenizer, vocab, template, stop_ids, dtype, quant
        )
        stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids]
        (out / "Modelfile").write_text(modelfile(fmt, stops, GGUF_NAME))

    return write


def _architecture(config) -> str:
    names = getattr(config, "architectures", None) or []
    arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if arch is None:
        raise _cannot(
            f"architecture {', '.join(names) or config.model_type} is not supported "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise _cannot(f"rope scaling {rope.get('rope_type', rope.get('type'))!r} is not supported")
    if getattr(config, "use_sliding_window", False):
        raise _cannot("sliding-window attention is not supported")
    return arch


def _vocab(tokenizer, n_vocab: int) -> Vocab:
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level(spec.get("decoder")):
        raise _cannot(f"the tokenizer is {model.get('type')} (only byte-level BPE converts)")
    pre = _pre_name(spec.get("pre_tokenizer"))
    tokens: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
        tokens[added["id"]] = (added["content"], kind)
    size = max(n_vocab, max(tokens) + 1)
    if size > n_vocab:
        raise _cannot(f"the tokenizer has {size} tokens, the model's embeddings only {n_vocab}")
    full = [tokens.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED)) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return Vocab(pre, [t for t, _ in full], [int(k) for _, k in full], merges)


def _is_byte_level(part) -> bool:
    if not part:
        return False
    if part.get("type") == "Sequence":
        return any(_is_byte_level(p) for p in part.get("decoders", part.get("pretokenizers", [])))
    return part.get("type") == "ByteLevel"


def _pre_name(pre) -> str:
    if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"
    if pre and pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers", [])
        split = [p for p in parts if p.get("type") == "Split"]
        if len(parts) == 2 and len(split) == 1:
            name = SPLITS.get((split[0].get("pattern") or {}).get("Regex"))
            if name is not None:
                return name
    raise _cannot("the tokenizer's pre-tokenizer split rule has no llama.cpp equivalent")


def _stop_ids(tokenizer, gen) -> list[int]:
    ids = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    if not ids:
        raise _cannot("the model has no end-of-sequence token")
    return ids


def _tensor_names(config, arch: str) -> dict[str, str]:
    """HF parameter name -> GGUF tensor name, for every weight of this config (built on the meta
    device: no memory, no weights read)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    name_map = gguf.get_tensor_name_map(_arch_enum(arch), config.num_hidden_layers)
    names = {}
    for key in model.state_dict():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd; transformers reads "no output.weight" as tied
        mapped = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise _cannot(f"the weight {key} has no GGUF name")
        names[key] = mapped
    return names


def _arch_enum(arch: str):
    import gguf

    return next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)


def _permute(w, n_head: int):
    """llama.cpp's q/k row order for llama (rotary halves interleaved per head)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}


def _write(
    path: Path,
    source: ExportSource,
    config,
    arch: str,
    model,
    tokenizer,
    vocab: Vocab,
    template: str,
    stop_ids: list[int],
    dtype: str,
    quant: str | None,
) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(source.name)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_parameters", None) or {}
    w.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(len(vocab.tokens))
    w.add_file_type(FILE_TYPES[quant or dtype])
    if quant:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    if tokenizer.bos_token_id is not None:
        w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(stop_ids[0])
    if len(stop_ids) > 1:
        w.add_eot_token_id(stop_ids[1])
    if tokenizer.pad_token_id is not None:
        w.add_pad_token_id(tokenizer.pad_token_id)
    bos = tokenizer.bos_token_id
    w.add_add_bos_token(bos is not None and tokenizer("a")["input_ids"][:1] == [bos])
    w.add_add_eos_token(False)
    w.add_chat_template(template)

    names = _tensor_names(config, arch)
    target = gguf.GGMLQuantizationType[(quant or dtype).upper()]
    for key, tensor in model.state_dict().items():
        if key not in names:
            continue
        data = tensor.detach().float().numpy()
        if arch == "llama" and key.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in key else config.num_key_value_heads
            data = _permute(data, heads)
        qtype = target
        if data.ndim == 1 or (qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32):
            qtype = gguf.GGMLQuantizationType.F32  # norms and biases stay f32, as llama.cpp does
        out = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
        w.add_tensor(names[key], out, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
