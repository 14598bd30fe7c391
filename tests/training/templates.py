"""Chat templates of the model families users fine-tune, written for the tests (no downloads), with
the structure and quirks of the published ones, and test tokenizers / models built from
tuneforge-tiny's by adding each family's special tokens and setting bos / eos / pad as it does.

Quirks kept on purpose:
- Llama 3.1: no pad token; `<|begin_of_text|>` written by the template; a system block (with the
  knowledge-date lines) always present; `<|eot_id|>` ends a turn; content trimmed.
- Qwen2.5: ChatML, a default system prompt, tools in the system turn, `<tool_call>` JSON.
- Qwen3: reasoning. The last assistant turn (and later ones with reasoning) after the last user
  query gets a `<think>` block, empty (`<think>\\n\\n</think>\\n\\n`) without reasoning; earlier
  turns lose theirs: the template rewrites history.
- Gemma 3: no system role (its text is folded into the first user turn), the model role is
  `model`, the terminator `<end_of_turn>` is not the tokenizer's EOS (`<eos>`): only the
  generation config names it.
- Mistral (v0.2 template): `[INST] ... [/INST]`, no generation prompt, the answer is written
  after a space and ends with `</s>`; no pad token.
- SmolLM2: ChatML with a default system prompt; pad == EOS == `<|im_end|>` (as published).
- Phi-3: `<|end|>` ends a turn but the tokenizer's EOS is `<|endoftext|>` (the generation config
  names both), pad == EOS, and a finished conversation gets a trailing EOS that a conversation
  ending with the generation prompt does not have: the template rewrites history too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LLAMA3 = r"""{{- bos_token }}
{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

_QWEN_TOOLS = r"""{{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}"""

QWEN25 = (
    r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n" }}
    """
    + _QWEN_TOOLS
    + r"""
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
)

QWEN3 = (
    r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    """
    + _QWEN_TOOLS
    + r"""
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""
)

GEMMA3 = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Gemma 2: like Gemma 3's, but a system message is refused instead of folded in.
GEMMA2 = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"""

MISTRAL = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

# As published in SmolLM2-135M-Instruct (identical to the template in the GGUF on disk).
SMOLLM2 = """{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}"""

PHI3 = """{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'user' %}{{'<|user|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>
' + message['content'] + '<|end|>
'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>
' }}{% else %}{{ eos_token }}{% endif %}"""


@dataclass(frozen=True)
class Family:
    name: str
    template: str
    special: list[str]  # added as special tokens (skipped when decoding)
    eos: str
    terminator: str  # the token that ends an assistant turn
    turn: str  # what an assistant turn generates: "{}" is the answer
    bos: str | None = None
    pad: str | None = None  # None: the family has no pad token
    unk: str | None = None
    plain: list[str] = field(default_factory=list)  # added, not special (decoded as text)
    generation_eos: list[str] = field(default_factory=list)  # the generation config's EOS ids
    system_role: bool = True  # the template renders a system message (maybe folded)

    def reply(self, answer: str) -> str:
        """The served text of a turn that answers `answer`: what it generates, without the
        terminator (and what follows it)."""
        return self.turn.format(answer).split(self.terminator)[0]


FAMILIES = {
    f.name: f
    for f in [
        Family(
            "llama3",
            LLAMA3,
            [
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|eom_id|>",
            ],
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            terminator="<|eot_id|>",
            turn="{}<|eot_id|>",
            generation_eos=["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
        ),
        Family(
            "qwen2.5",
            QWEN25,
            [],
            eos="<|im_end|>",
            pad="<|endoftext|>",
            terminator="<|im_end|>",
            turn="{}<|im_end|>\n",
            generation_eos=["<|im_end|>", "<|endoftext|>"],
        ),
        Family(
            "qwen3",
            QWEN3,
            [],
            plain=["<think>", "</think>"],
            eos="<|im_end|>",
            pad="<|endoftext|>",
            terminator="<|im_end|>",
            turn="<think>\n\n</think>\n\n{}<|im_end|>\n",
            generation_eos=["<|im_end|>", "<|endoftext|>"],
        ),
        Family(
            "gemma3",
            GEMMA3,
            ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            terminator="<end_of_turn>",
            turn="{}<end_of_turn>\n",
            generation_eos=["<eos>", "<end_of_turn>"],
        ),
        Family(
            "mistral",
            MISTRAL,
            ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
            bos="<s>",
            eos="</s>",
            unk="<unk>",
            terminator="</s>",
            turn=" {}</s>",
        ),
        Family(
            "smollm2",
            SMOLLM2,
            [],
            bos="<|im_start|>",
            eos="<|im_end|>",
            pad="<|im_end|>",
            unk="<|endoftext|>",
            terminator="<|im_end|>",
            turn="{}<|im_end|>\n",
        ),
        Family(
            "phi3",
            PHI3,
            ["<unk>", "<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
            bos="<s>",
            eos="<|endoftext|>",
            pad="<|endoftext|>",
            unk="<unk>",
            terminator="<|end|>",
            turn="{}<|end|>\n<|endoftext|>",
            generation_eos=["<|endoftext|>", "<|assistant|>", "<|end|>"],
        ),
    ]
}


def family_tokenizer(tiny_dir: Path, family: Family):
    """tuneforge-tiny's tokenizer turned into `family`'s: its special tokens added, its template,
    bos / eos / pad / unk set as the published tokenizer sets them."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in family.special], special_tokens=True
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.plain])
    tok.bos_token = family.bos
    tok.eos_token = family.eos
    tok.pad_token = family.pad
    tok.unk_token = family.unk
    tok.chat_template = family.template
    return tok


def stop_ids(tok, family: Family) -> set[int]:
    """What the trainer and the server stop on: the tokenizer's EOS and the generation config's."""
    return {tok.convert_tokens_to_ids(t) for t in [family.eos, *family.generation_eos]}


def build_family_model(tiny_dir: Path, family: Family, out: Path) -> Path:
    """A servable, trainable model directory: tuneforge-tiny's weights with the family's tokenizer
    (embeddings resized; the new rows drawn like the tiny model's, from a fixed seed, so that each
    special token is distinct), its generation config and its bos / eos / pad ids."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok = family_tokenizer(tiny_dir, family)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        rows = model.get_input_embeddings().weight[old:]
        rows.copy_(torch.randn(rows.shape, generator=torch.Generator().manual_seed(7)) * 0.1)
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    for key, value in ids.items():
        setattr(model.config, key, value)
    gen_eos = sorted(stop_ids(tok, family))
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
        eos_token_id=gen_eos if len(gen_eos) > 1 else gen_eos[0],
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
