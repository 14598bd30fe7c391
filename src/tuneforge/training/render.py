"""One training example (an OpenAI JSONL line) -> token ids + labels, with the model's own template.

Chat examples are rendered with the tokenizer's chat template (or `DEFAULT_CHAT_TEMPLATE`, ChatML
terminated by the tokenizer's EOS, for models without one). Labels are the input ids on the tokens
an assistant turn with `weight != 0` generates, its terminator included, and -100 elsewhere.

How assistant turns are found: the conversation is rendered prefix by prefix, as text:
`messages[:i]` with the generation prompt, then `messages[:i+1]`. What the second adds to the first
is exactly what the model generates for turn i (content, tool calls, terminator): the model's view
when it produced turn i. Text spans become token spans through the fast tokenizer's offsets, so a
span never depends on how BPE splits at a boundary.

Where that view is a prefix of the full rendering (ChatML, Qwen2.5, Llama 3, Gemma, Mistral v0.2,
...), turn i is labelled inside the full conversation: one sequence. Templates that rewrite earlier
turns once later ones are added (Qwen3 drops the `<think>` block of assistant turns before the last
user query and writes `<think>\n\n</think>\n\n` only for the turn being generated; Phi-3 appends
EOS only at the end of a finished conversation) fail that test for some turn i: such a turn gets a
sequence of its own, the rendering of `messages[:i+1]`, with only turn i labelled. An example is
then several sequences (`Rendered.seq_lens`), trained side by side without attending to each other
(batches.py), and billed for every token of every sequence (`len(rendered)`). Only a template
whose rendering of `messages[:i+1]` does not even start with its rendering of `messages[:i]` plus
the generation prompt cannot locate turn i: `unsupported_chat_template` (Mistral v0.3's template,
which writes the system prompt into the last user turn only when that turn ends the conversation,
for examples with a system message).

Reasoning (`reasoning_content`, `<think>` blocks): OpenAI's chat format has no reasoning field for
training data. As in Hugging Face / Qwen3 data, an assistant message may carry `reasoning_content`
(a string, a tuneforge extension); it is passed to the template like `content`, and what the
template makes of it is trained as part of that turn (Qwen3: `<think>\nreasoning\n</think>\n\n`
before the answer on the turns after the last user query, dropped on earlier ones, which is what
the model saw when it produced later turns). A `<think>...</think>` block written inside `content`
is passed as is (Qwen3's template splits it off the same way). Templates without reasoning support
ignore `reasoning_content`. Serving returns what the model generates, think block included.

Special tokens: the terminators are the tokenizer's EOS plus the generation config's EOS ids
(`stop_token_ids`: Gemma's `<end_of_turn>` and Phi-3's `<|end|>` are only there). Training never
pads (batches.py), so any pad works, even none (Llama 3) or pad == EOS (SmolLM2); where a pad is
needed (batched serving) `pad_id` picks one that is no stop token.

OpenAI's data is mapped to the Hugging Face chat format first: `developer` -> `system`, legacy
`function` messages -> `tool`, `function_call` -> `tool_calls`, `functions` -> `tools`, tool-call
`arguments` JSON strings -> objects (templates `tojson` them), text content parts joined. `name`
and `tool_call_id` are passed through (templates use them or not); `parallel_tool_calls` has no
template equivalent and is ignored.

Legacy `{"prompt", "completion"}`: the prompt (with the tokenizer's usual BOS) is masked, the
completion plus EOS is trained.

Error codes raised (as `tuneforge.errors.InvalidRequest`):
- `invalid_training_file`: the template cannot render an example (the message names the line);
- `unsupported_chat_template`: even rendered on its own, an assistant turn's rendering does not
  extend the rendering of the conversation before it, so the turn cannot be located;
- `terminator_not_trained`: an assistant turn's trained labels hold no terminator (EOS): the
  model would never learn to stop;
- `no_trained_tokens`: nothing in the sample is trained (every assistant turn has weight 0).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tuneforge.errors import InvalidRequest

IGNORE_INDEX = -100

# ChatML, with the tokenizer's own EOS as the turn terminator, so that the terminator is a single
# known token even for base models that ship no chat template.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content %}{{- message.content }}{%- endif %}"
    "{%- if message.tool_calls %}{%- for call in message.tool_calls %}"
    "{{- '\\n<tool_call>\\n' + ({'name': call.function.name, 'arguments': call.function.arguments} | tojson) + '\\n</tool_call>' }}"
    "{%- endfor %}{%- endif %}"
    "{{- eos_token + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class Rendered:
    """One example's tokens. Usually one sequence; an example whose turns need separate
    renderings (see the module docstring) is several, concatenated, with `seq_lens` their lengths.
    Each sequence is a context of its own: positions restart and it attends only to itself."""

    input_ids: list[int]
    labels: list[int]  # same length; IGNORE_INDEX where not trained
    truncated: bool = False  # cut at max_seq_len
    seq_lens: tuple[int, ...] | None = None  # None: a single sequence

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)

    def sequences(self) -> list[Rendered]:
        """Each sequence on its own (`[self]` for a single sequence)."""
        if self.seq_lens is None:
            return [self]
        out, start = [], 0
        for n in self.seq_lens:
            out.append(Rendered(self.input_ids[start : start + n], self.labels[start : start + n]))
            start += n
        return out


def join_sequences(parts: list[Rendered]) -> Rendered:
    """Several single-sequence renderings of one example -> one multi-sequence `Rendered`."""
    if len(parts) == 1:
        return parts[0]
    return Rendered(
        [t for p in parts for t in p.input_ids],
        [x for p in parts for x in p.labels],
        any(p.truncated for p in parts),
        tuple(len(p) for p in parts),
    )


def truncate(rendered: Rendered, max_seq_len: int | None) -> Rendered:
    """Cut each sequence to `max_seq_len` tokens, from the end."""
    if max_seq_len is None or all(len(s) <= max_seq_len for s in rendered.sequences()):
        return rendered
    return join_sequences(
        [
            Rendered(s.input_ids[:max_seq_len], s.labels[:max_seq_len], len(s) > max_seq_len)
            for s in rendered.sequences()
        ]
    )


def ensure_chat_template(tokenizer) -> bool:
    """Give a tokenizer without a chat template the default one. True when it was set."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def is_chat(example: dict) -> bool:
    return "messages" in example


def render_example(tokenizer, example: dict, max_seq_len: int | None = None) -> Rendered:
    """Token ids and labels of one example (chat or prompt/completion); truncated from the end."""
    if is_chat(example):
        rendered = _render_chat(tokenizer, example)
    else:
        rendered = _render_prompt_completion(tokenizer, example)
    return truncate(rendered, max_seq_len)


def to_hf_chat(example: dict) -> tuple[list[dict], list[dict] | None, list[bool]]:
    """OpenAI chat example -> (HF messages, HF tools or None, trained flag per message)."""
    messages: list[dict] = []
    trained: list[bool] = []
    for m in example["messages"]:
        role = m.get("role")
        out: dict[str, Any] = {"role": {"developer": "system", "function": "tool"}.get(role, role)}
        out["content"] = _text(m.get("content"))
        for key in ("name", "tool_call_id", "reasoning_content"):
            if m.get(key) is not None:
                out[key] = m[key]
        calls = m.get("tool_calls")
        if not calls and m.get("function_call"):
            calls = [{"type": "function", "function": m["function_call"]}]
        if calls:
            out["tool_calls"] = [_tool_call(c, j) for j, c in enumerate(calls)]
        messages.append(out)
        trained.append(role == "assistant" and m.get("weight", 1) != 0)
    tools = example.get("tools") or [
        {"type": "function", "function": f} for f in example.get("functions") or []
    ]
    return messages, (tools or None), trained


def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only (no images on text models)
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"content part of type {kind!r} is not supported (text only)")
            parts.append(part.get("text", ""))
        return "".join(parts)
    return str(content)


def _tool_call(call: dict, j: int) -> dict:
    fn = dict(call.get("function") or {})
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            fn["arguments"] = json.loads(args)
        except ValueError:
            pass  # not JSON: the template gets the string as is
    out = {"type": "function", "function": fn}
    out["id"] = call.get("id") or f"call_{j}"
    return out


def _apply(tokenizer, messages: list[dict], tools, *, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _render_chat(tokenizer, example: dict) -> Rendered:
    try:
        messages, tools, trained = to_hf_chat(example)
        full = _apply(tokenizer, messages, tools, add_generation_prompt=False)
        sequences = chat_sequences(
            lambda msgs, gen: _apply(tokenizer, msgs, tools, add_generation_prompt=gen),
            messages,
            trained,
            full,
        )
    except InvalidRequest:
        raise
    except Exception as exc:  # jinja errors, bad content parts
        raise InvalidRequest(
            f"The chat template cannot render this example: {exc}",
            code="invalid_training_file",
            param="messages",
        ) from exc

    parts = []
    for text, spans in sequences:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        parts.append(span_labels(list(enc["input_ids"]), enc["offset_mapping"], spans))
    return join_sequences(parts)


Sequences = list[tuple[str, list[tuple[int, int]]]]


def chat_sequences(render, messages: list[dict], trained: list[bool], full: str) -> Sequences:
    """The texts to train on and, in each, the [start, end) character spans that trained
    assistant turns generate (module docstring: one sequence, or more for templates that rewrite
    earlier turns). `render(messages, add_generation_prompt)` renders a prefix of the conversation."""
    in_full: list[tuple[int, int]] = []
    own: Sequences = []  # turns that need their own rendering, in turn order
    for i, flag in enumerate(trained):
        if not flag:
            continue
        try:
            before = render(messages[:i], True)
        except Exception:
            if i:
                raise
            before = ""  # a template that cannot render an empty conversation
        upto = full if i + 1 == len(messages) else render(messages[: i + 1], False)
        if not upto.startswith(before):
            raise InvalidRequest(
                "The model's chat template renders a conversation differently once an assistant "
                "turn is added to it (e.g. it writes the system prompt only before a final user "
                "message), so the turn cannot be located for the label mask.",
                code="unsupported_chat_template",
            )
        span = (len(before), len(upto))
        if full.startswith(upto):
            in_full.append(span)
        else:
            own.append((upto, [span]))
    if in_full or not own:  # the full conversation is trained on (or nothing is)
        own.append((full, in_full))
    return own


def span_labels(ids: list[int], offsets, spans: list[tuple[int, int]]) -> Rendered:
    """Labels for token `ids` with character `offsets`: a token is trained when it starts inside
    a span, so a span never depends on how BPE splits at its boundary."""
    labels = [IGNORE_INDEX] * len(ids)
    if not spans:
        return Rendered(ids, labels)
    k, n = 0, len(spans)
    first, end = spans[0]
    for t, (start, _end) in enumerate(offsets):
        while start >= end:  # past this span: on to the next one
            k += 1
            if k == n:
                return Rendered(ids, labels)
            first, end = spans[k]
        if first <= start:  # a token belongs to the span it starts in
            labels[t] = ids[t]
    return Rendered(ids, labels)


def _render_prompt_completion(tokenizer, example: dict) -> Rendered:
    prompt = tokenizer(example.get("prompt", ""), add_special_tokens=True)["input_ids"]
    completion = tokenizer(example.get("completion", ""), add_special_tokens=False)["input_ids"]
    if prompt and tokenizer.eos_token_id is not None and prompt[-1] == tokenizer.eos_token_id:
        prompt = prompt[:-1]  # tokenizers that append EOS to every encoding
    completion = list(completion) + [tokenizer.eos_token_id]
    return Rendered(list(prompt) + completion, [IGNORE_INDEX] * len(prompt) + completion)


def trained_spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each contiguous run of trained labels."""
    spans, start = [], None
    for t, x in enumerate(labels + [IGNORE_INDEX]):
        if x != IGNORE_INDEX and start is None:
            start = t
        elif x == IGNORE_INDEX and start is not None:
            spans.append((start, t))
            start = None
    return spans


def stop_token_ids(tokenizer, generation_config=None) -> set[int]:
    """The ids that end a turn: the tokenizer's EOS plus the model's generation EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    return ids


def pad_id(tokenizer, stop_ids: Iterable[int] = ()) -> int:
    """The id to fill padded positions with where padding is needed (batched serving's left
    padding; training never pads, batches.py). Padded positions are masked, so the model never
    sees them; the id must still never be a stop id, so that nothing reading the ids (a mask
    derived from `ids != pad`, a generate() loop) takes a real EOS for padding or padding for an
    EOS. The tokenizer's pad when distinct from every stop id (not SmolLM2's pad == EOS), else its
    unk token, else the lowest id that is not a stop id (Llama 3 has neither pad nor unk)."""
    stops = set(stop_ids) | {tokenizer.eos_token_id}
    for candidate in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if candidate is not None and candidate not in stops:
            return candidate
    return next(i for i in range(len(tokenizer) + 1) if i not in stops)


def audit(
    tokenizer, examples: Iterable[dict | tuple[int, dict]], *, stop_ids: set[int] | None = None
) -> list[Rendered]:
    """Pre-flight check on a sample: render each example and check its label mask.

    Raises InvalidRequest (codes in the module docstring) when the template cannot render the
    data or an assistant turn's trained labels hold no terminator. Returns the renderings. `examples` are dicts or (line number, dict) pairs.
    """
    stop_ids = stop_ids or stop_token_ids(tokenizer)
    if not stop_ids:
        raise InvalidRequest(
            "The tokenizer has no EOS token, so the model cannot learn to stop.",
            code="terminator_not_trained",
        )
    out: list[Rendered] = []
    for n, item in enumerate(examples, start=1):
        line, example = item if isinstance(item, tuple) else (n, item)
        try:
            rendered = render_example(tokenizer, example)
        except InvalidRequest as exc:
            where = f"Line {line}: " if exc.code == "invalid_training_file" else ""
            raise InvalidRequest(where + exc.message, code=exc.code, param=exc.param) from exc
        for seq in rendered.sequences():
            for start, end in trained_spans(seq.labels):
                if stop_ids.intersection(seq.input_ids[start:end]):
                    continue
                shown = tokenizer.decode(seq.input_ids[start:end][-8:])
                raise InvalidRequest(
                    f"Line {line}: the trained tokens of an assistant turn do not include the turn "
                    f"terminator ({_names(tokenizer, stop_ids)}); the turn ends with {shown!r}. "
                    "The model would never learn to stop: fix the chat template.",
                    code="terminator_not_trained",
                )
        out.append(rendered)
    # No pad-token rule: training packs examples without padding (batches.py), so a pad equal to
    # EOS (SmolLM2) or no pad at all (Llama 3) never reaches a batch or the loss.
    if out and not any(r.n_trained for r in out):
        raise InvalidRequest(
            "No example in the sample has a trained token (every assistant message has weight 0).",
            code="no_trained_tokens",
        )
    return out


def _names(tokenizer, ids: set[int]) -> str:
    return ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in sorted(ids))
