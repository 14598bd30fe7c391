"""render_batch (the fast path of the validator and the trainer) gives exactly what render_example
gives: the same input_ids, labels and truncation flag, and the same errors."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.training.helpers import MULTI_TURN, WEATHER_TOOL
from tuneforge.errors import InvalidRequest
from tuneforge.training.batch_render import render_batch
from tuneforge.training.render import render_example

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_train import make_example  # noqa: E402  (the benchmark's log-normal chat generator)

VARIED = [
    MULTI_TURN,
    {
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {
                "role": "user",
                "name": "ann",
                "content": [{"type": "text", "text": "thank "}, {"type": "text", "text": "you"}],
            },
            {"role": "assistant", "content": "merci"},
        ]
    },
    # ends with a user turn: the full text is not the last trained prefix
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ]
    },
    # every assistant turn has weight 0: nothing trained
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 0}]},
    {
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "not json"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 22}'},
            {"role": "tool", "tool_call_id": "c2", "content": '{"temperature": 25}'},
            {"role": "assistant", "content": "22 and 25 degrees."},
        ],
    },
    # legacy functions / function_call / function role
    {
        "functions": [{"name": "lookup", "parameters": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Look up owl"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "lookup", "arguments": '{"query": "owl"}'},
            },
            {"role": "function", "name": "lookup", "content": "a bird"},
            {"role": "assistant", "content": "An owl is a bird."},
        ],
    },
    {
        "messages": [
            {"role": "user", "content": "Tell me a story. " * 40},
            {"role": "assistant", "content": "Once upon a time " * 40},
        ]
    },  # truncated
    {
        "messages": [
            {"role": "user", "content": "Pünktlich? 日本語 ✓ \u00a0tabs\tand\nnewlines"},
            {"role": "assistant", "content": "Ja. 東京 ✓"},
        ]
    },
]

PROMPT_COMPLETION = [
    {"prompt": "The capital of France is", "completion": " Paris."},
    {"prompt": "", "completion": "Just a completion."},
    {"prompt": "Count: " + "one two three " * 30, "completion": " four"},
]


def _reference(tok, examples, max_seq_len):
    out = []
    for e in examples:
        try:
            r = render_example(tok, e, max_seq_len)
            out.append((r.input_ids, r.labels, r.truncated, r.seq_lens))
        except InvalidRequest as exc:
            out.append(("error", exc.code, exc.message, exc.param))
    return out


def _fast(tok, examples, max_seq_len):
    batch = render_batch(tok, examples, max_seq_len)
    out = []
    for n, r in enumerate(batch.rendered):
        if r is None:
            exc = batch.errors[n]
            out.append(("error", exc.code, exc.message, exc.param))
        else:
            assert n not in batch.errors
            out.append((r.input_ids, r.labels, r.truncated, r.seq_lens))
    return out


@pytest.mark.parametrize("max_seq_len", [None, 48])
def test_identical_to_render_example_on_a_varied_corpus(tiny_tokenizer, max_seq_len) -> None:
    rng = random.Random(7)
    corpus = VARIED + [make_example(rng) for _ in range(300)]
    expected = _reference(tiny_tokenizer, corpus, max_seq_len)
    assert _fast(tiny_tokenizer, corpus, max_seq_len) == expected
    assert _fast(tiny_tokenizer, PROMPT_COMPLETION, max_seq_len) == _reference(
        tiny_tokenizer, PROMPT_COMPLETION, max_seq_len
    )
    # the corpus really exercises what it claims to
    truncated = [r for r in expected if r[0] != "error" and r[2]]
    assert (len(truncated) > 0) == (max_seq_len is not None)
    assert any(r[0] != "error" and all(x == -100 for x in r[1]) for r in expected)  # weight 0
    assert all(r[0] != "error" for r in expected)


@pytest.mark.parametrize("name", ["qwen3", "phi3"])
def test_identical_for_templates_that_rewrite_earlier_turns(tiny_model_dir, name) -> None:
    from tests.training.templates import FAMILIES, family_tokenizer

    tok = family_tokenizer(tiny_model_dir, FAMILIES[name])
    rng = random.Random(11)
    corpus = VARIED + [make_example(rng) for _ in range(100)]
    for max_seq_len in (None, 48):
        expected = _reference(tok, corpus, max_seq_len)
        assert _fast(tok, corpus, max_seq_len) == expected
        # Phi-3's template renders no tool calls (their messages have no content): the same error
        errors = [i for i, r in enumerate(expected) if r[0] == "error"]
        assert errors == ([] if name == "qwen3" else [4, 5])
        assert any(r[3] is not None for r in expected)  # per-turn sequences really occur


def test_same_errors_as_render_example(tiny_tokenizer, tiny_model_dir) -> None:
    bad = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": "A cat."},
            ]
        },
        VARIED[0],
    ]
    fast = _fast(tiny_tokenizer, bad, None)
    assert fast == _reference(tiny_tokenizer, bad, None)
    assert fast[0][:2] == ("error", "invalid_training_file") and fast[1][0] != "error"

    # a template that rewrites earlier turns once later ones are added
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ m.role }}{% if loop.last %}[last]{% endif %}: "
        "{{ m.content }}{{ eos_token }}{% endfor %}"
    )
    fast = _fast(tok, VARIED[:2], None)
    assert fast == _reference(tok, VARIED[:2], None)
    assert {r[1] for r in fast} == {"unsupported_chat_template"}


def test_default_chatml_template_and_a_template_dict(tiny_model_dir) -> None:
    from tuneforge.training.render import DEFAULT_CHAT_TEMPLATE

    rng = random.Random(3)
    corpus = VARIED + [make_example(rng) for _ in range(50)]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    assert _fast(tok, corpus, None) == _reference(tok, corpus, None)

    # a tokenizer with named templates: "tool_use" when the example has tools, else "default"
    tiny = AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    tok.chat_template = {"default": DEFAULT_CHAT_TEMPLATE, "tool_use": tiny}
    fast = _fast(tok, corpus, None)
    assert fast == _reference(tok, corpus, None)
    assert "# Tools" in tok.decode(fast[4][0]) and "# Tools" not in tok.decode(fast[0][0])
