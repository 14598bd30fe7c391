"""`render_batch`: `render_example` for many examples at once, with exactly the same results.

Why: rendering dominates validating a big file and preparing a training run. Per example,
`render_example` calls `tokenizer.apply_chat_template` once per needed prefix (each call re-checks
its arguments and re-copies the whole conversation) and then the tokenizer once. Here:
- the compiled Jinja template is rendered directly, with the arguments `apply_chat_template`
  passes to it (the special tokens, `tools`, the messages with None values dropped and copied as
  plain data), prepared once per example rather than once per prefix;
- the same prefixes are rendered, so spans, the prefix-stability check and the per-turn
  sequences of templates that rewrite earlier turns are the same code (`render.chat_sequences`),
  and the last prefix is reused as the full text when the conversation ends with a trained
  assistant turn;
- texts are tokenized in one batched call of the Rust tokenizer (offsets included).
An example the fast path cannot render is rendered again by `render_example`, so errors (code,
message) are exactly its errors. tests/training/test_batch_render.py checks the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tuneforge.errors import InvalidRequest
from tuneforge.training.render import (
    IGNORE_INDEX,
    Rendered,
    Sequences,
    chat_sequences,
    is_chat,
    join_sequences,
    render_example,
    span_labels,
    to_hf_chat,
    truncate,
)


@dataclass
class BatchRendering:
    rendered: list[Rendered | None]  # None where it failed
    errors: dict[int, InvalidRequest] = field(default_factory=dict)  # index -> what failed


def render_batch(tokenizer, examples: Sequence[dict], max_seq_len: int | None = None) -> BatchRendering:
    """Token ids and labels of each example, identical to `render_example(tokenizer, e, max_seq_len)`."""
    out = BatchRendering([None] * len(examples))
    renderer = _template_renderer(tokenizer)
    texts: list[str] = []
    pending: list[tuple[int, Sequences]] = []  # (index, its sequences); texts in that order
    prompts: list[int] = []
    for n, example in enumerate(examples):
        if not is_chat(example):
            prompts.append(n)
            continue
        try:
            sequences = _chat_sequences(renderer, example)
        except Exception:
            # Rare (broken data or template): the reference path says exactly what is wrong.
            _fallback(tokenizer, examples, n, max_seq_len, out)
            continue
        texts += [text for text, _spans in sequences]
        pending.append((n, sequences))
    if texts:
        encoded = iter(_encode_with_offsets(tokenizer, texts))
        for n, sequences in pending:
            parts = [span_labels(*next(encoded), spans) for _text, spans in sequences]
            out.rendered[n] = truncate(join_sequences(parts), max_seq_len)
    if prompts:
        _prompt_completions(tokenizer, examples, prompts, max_seq_len, out)
    return out


def _encode_with_offsets(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """`tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)`, straight from
    the Rust tokenizer when the wrapper would only add its per-encoding conversion (no truncation,
    padding or special-token splitting configured on the backend)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (
        backend is not None
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
    ):
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [(list(ids), offsets) for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"])]


def _chat_sequences(renderer, example: dict) -> Sequences:
    messages, tools, trained = to_hf_chat(example)
    if renderer is None:
        raise RuntimeError("no direct template renderer")
    render = renderer(messages, tools)
    return chat_sequences(render, messages, trained, render(messages, False))


def _template_renderer(tokenizer):
    """(messages, tools) -> render(prefix, add_generation_prompt) -> text, rendering the compiled
    template as `apply_chat_template(..., tokenize=False)` does; None when this transformers
    version does not have the helpers (every example then takes the reference path)."""
    try:
        from transformers.utils.chat_template_utils import (
            _alias_reasoning_fields,
            _compile_jinja_template,
            _plain_template_data,
        )
    except ImportError:
        return None
    special = _plain_template_data(dict(tokenizer.special_tokens_map))

    def prepare(messages: list[dict], tools: list[dict] | None):
        if tools is not None and not all(isinstance(t, dict) for t in tools):
            raise ValueError("tools must be JSON schemas")  # the reference path words the error
        template = _compile_jinja_template(tokenizer.get_chat_template(None, tools))
        chat = _alias_reasoning_fields(
            _plain_template_data([{k: v for k, v in m.items() if v is not None} for m in messages])
        )
        schemas = _plain_template_data(tools)

        def render(prefix: list[dict], add_generation_prompt: bool) -> str:
            if not prefix:
                raise ValueError("empty conversation")  # apply_chat_template refuses it too
            return template.render(
                messages=chat[: len(prefix)],
                tools=schemas,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **special,
            )

        return render

    return prepare


def _prompt_completions(
    tokenizer, examples: Sequence[dict], indices: list[int], max_seq_len: int | None, out: BatchRendering
) -> None:
    try:
        prompts = tokenizer([examples[n].get("prompt", "") for n in indices], add_special_tokens=True)[
            "input_ids"
        ]
        completions = tokenizer(
            [examples[n].get("completion", "") for n in indices], add_special_tokens=False
        )["input_ids"]
    except Exception:
        for n in indices:
            _fallback(tokenizer, examples, n, max_seq_len, out)
        return
    eos = tokenizer.eos_token_id
    for n, prompt, completion in zip(indices, prompts, completions):
        prompt = list(prompt)
        if prompt and eos is not None and prompt[-1] == eos:
            prompt = prompt[:-1]  # tokenizers that append EOS to every encoding
        completion = list(completion) + [eos]
        out.rendered[n] = truncate(
            Rendered(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion), max_seq_len
        )


def _fallback(
    tokenizer, examples: Sequence[dict], n: int, max_seq_len: int | None, out: BatchRendering
) -> None:
    try:
        out.rendered[n] = render_example(tokenizer, examples[n], max_seq_len)
    except InvalidRequest as exc:
        out.errors[n] = exc


__all__ = ["BatchRendering", "render_batch"]
