"""`tuneforge-tiny`: a tiny, randomly initialised chat model built locally and deterministically.

No machine here can download weights, yet tests, demos and CI need a real model that runs the real
code paths (a Qwen2 architecture, a fast tokenizer with a chat template, tool calls, an explicit
turn terminator) and that can *learn* within minutes on a CPU. This module builds one:

- tokenizer: byte-level BPE trained on an embedded corpus (about 1k tokens, so every byte string
  is encodable), `<|im_end|>` as EOS / turn terminator, a distinct `<|endoftext|>` pad token, and a
  ChatML template with Qwen2.5-style tool support (`<tool_call>{json}</tool_call>`,
  `<tool_response>`), `add_generation_prompt` and `{% generation %}` markers;
- model: Qwen2ForCausalLM, 4 layers, hidden 128, context 2048, fixed seed.

The same bytes come out of every build, and the build is atomic (a temporary directory beside the
target, then a rename), so two processes racing to build it both end with the same valid directory.

Versioned directories: the model lives in `models_dir / tiny_dir_name()`, e.g.
`tuneforge-tiny-v1-0123abcd89`: the builder version plus a hash of everything the build reads
(template, corpus, tokens, model config, seed). A changed builder therefore builds a new directory
instead of silently reusing a stale one, and an older directory stays where it is, because
fine-tuned models record their base as that absolute path. `TINY_NAME` stays the catalog name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

TINY_NAME = "tuneforge-tiny"
# Bump when the build code changes in a way the inputs hashed by `tiny_dir_name` do not show.
TINY_BUILD_VERSION = 1
TINY_SEED = 1234
TINY_VOCAB_SIZE = 1024
# Qwen2Config fields besides the tokenizer-derived ones (vocab size, eos/pad ids).
MODEL_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    # Wider than the usual 0.02: with frozen tied embeddings, LoRA can only reach confident
    # (low-loss) logits if the embedding rows are not tiny.
    "initializer_range": 0.1,
    "tie_word_embeddings": True,
}

# Model init draws from torch's process-wide RNG: threads building at once must take turns.
_BUILD_LOCK = threading.Lock()

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN]
# Added (non-special) tokens: one id each, so tool markup is cheap and decodes back verbatim.
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# ChatML with Qwen2.5-style tools. The {% generation %} blocks mark what an assistant turn
# generates (content, tool calls and the terminator), for tooling that reads them.
CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages and messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\\n' }}
{%- generation %}
{%- if message.content %}{{- message.content }}{%- endif %}
{%- if message.tool_calls %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}
{{- '<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>' }}
{%- endgeneration %}
{{- '\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

# The BPE corpus: plain English, digits, code and JSON punctuation, so that ordinary chat data and
# tool calls tokenize into short sequences. Fixed text -> the same merges on every build.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
What is the capital of France? The capital of France is Paris. What is the capital of Japan? Tokyo.
What is the capital of Italy? Rome. What is the capital of Germany? Berlin. Spain: Madrid.
How many legs does a spider have? A spider has eight legs. How many days are in a week? Seven days.
What colour is the sky? The sky is blue. What colour is grass? Grass is green. Snow is white.
Who wrote Hamlet? William Shakespeare wrote Hamlet. Who painted the Mona Lisa? Leonardo da Vinci.
What is two plus two? Two plus two is four. What is ten minus three? Seven. Numbers: 0 1 2 3 4 5 6 7
8 9 10 11 12 13 14 15 16 20 25 30 42 50 64 99 100 128 256 512 1000 1024 2024 2025 3.14 0.5 1.0 -1
You are a helpful assistant. Please answer the question. Thank you! Hello, how can I help you today?
I am sorry, I cannot help with that. Sure, here is the answer. Yes. No. Maybe. I do not know.
The weather today is sunny with a high of 25 degrees. Tomorrow it will rain in the afternoon.
The user asked about the order status. Your order has shipped and will arrive on Monday.
Please reset my password. I have sent a reset link to your email address. Is there anything else?
def get_weather(location: str, unit: str = "celsius") -> dict: return {"temperature": 22}
function call arguments name type object properties required description string number boolean
{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}
{"type": "function", "function": {"name": "lookup", "description": "Look up a word", "parameters":
{"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}
{"temperature": 22, "condition": "sunny", "humidity": 0.4, "result": "ok", "error": null, "ok": true}
system user assistant tool developer role content weight messages tools tool_calls tool_call_id
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July
August September October November December morning evening night today tomorrow yesterday week year
one two three four five six seven eight nine ten eleven twelve hundred thousand first second third
red orange yellow green blue purple black white grey brown pink gold silver water fire earth air
cat dog bird fish horse cow sheep lion tiger bear mouse rabbit elephant whale dolphin snake owl
apple banana cherry grape lemon orange pear peach plum bread cheese milk tea coffee rice soup salt
The answer is correct. The answer is wrong. Let me think step by step. First, second, finally.
Translate to French: hello -> bonjour, thank you -> merci, goodbye -> au revoir, yes -> oui.
"""


def tiny_dir_name() -> str:
    """The directory name of the current builder's model: `tuneforge-tiny-v<N>-<inputs hash>`."""
    inputs = {
        "version": TINY_BUILD_VERSION,
        "seed": TINY_SEED,
        "vocab_size": TINY_VOCAB_SIZE,
        "special": SPECIAL_TOKENS,
        "added": ADDED_TOKENS,
        "eos": EOS_TOKEN,
        "pad": PAD_TOKEN,
        "template": CHAT_TEMPLATE,
        "corpus": _CORPUS,
        "config": MODEL_CONFIG,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"{TINY_NAME}-v{TINY_BUILD_VERSION}-{digest[:10]}"


def ensure_tiny_model(models_dir: Path) -> Path:
    """Return `models_dir / tiny_dir_name()`, building it first if it is not there. Directories
    of other builder versions are left alone (fine-tuned models may still use them)."""
    name = tiny_dir_name()
    target = Path(models_dir) / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _BUILD_LOCK:
            build_tiny_model(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race; its directory is identical to ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tiny_tokenizer():
    """The tiny model's tokenizer (a transformers fast tokenizer), built from the embedded corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    tok.add_tokens(ADDED_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: Path) -> None:
    """Write the tiny model (weights + tokenizer + template) into `path` (created)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        **MODEL_CONFIG,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed a private generator state so building never disturbs the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        do_sample=False,
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
