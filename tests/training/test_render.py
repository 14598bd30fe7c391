"""Label masks and the pre-flight audit, on the tiny model's real tokenizer and template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tests.training.helpers import MULTI_TURN, WEATHER_TOOL, weather_call
from tuneforge.errors import InvalidRequest
from tuneforge.training.batches import n_targets, pack
from tuneforge.training.render import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    audit,
    ensure_chat_template,
    render_example,
    trained_spans,
)


def trained_texts(tok, rendered) -> list[str]:
    return [tok.decode(rendered.input_ids[a:b]) for a, b in trained_spans(rendered.labels)]


def masked_text(tok, rendered) -> str:
    return tok.decode([i for i, lab in zip(rendered.input_ids, rendered.labels) if lab == IGNORE_INDEX])


@pytest.fixture
def fresh_tokenizer(tiny_model_dir):
    """A private copy that a test may break."""
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_multi_turn_trains_only_weighted_assistant_turns_with_terminator(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    r = render_example(tok, MULTI_TURN)
    assert len(r.labels) == len(r.input_ids)
    assert trained_texts(tok, r) == ["Hello!<|im_end|>\n", "Four, sorry.<|im_end|>\n"]
    # trained labels are the input ids themselves (the model shifts them)
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(r.input_ids, r.labels))
    masked = masked_text(tok, r)
    for text in ("Be brief.", "Hi", "What is 2+2?", "Five.", "Sure?", "<|im_start|>assistant\n"):
        assert text in masked
    assert tok.decode(r.input_ids) == tok.apply_chat_template(
        [{k: v for k, v in m.items() if k != "weight"} for m in MULTI_TURN["messages"]], tokenize=False
    )
    assert r.n_trained == sum(
        len(tok(t, add_special_tokens=False)["input_ids"]) for t in trained_texts(tok, r)
    )


def test_tool_calls_and_tool_responses(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    example = {
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            *weather_call(),
            {"role": "assistant", "content": "22 degrees."},
        ],
    }
    r = render_example(tok, example)
    assert trained_texts(tok, r) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call><|im_end|>\n',
        "22 degrees.<|im_end|>\n",
    ]
    masked = masked_text(tok, r)
    assert '<tool_response>\n{"temperature": 22}\n</tool_response>' in masked
    assert '"name": "get_weather"' in masked.split("</tools>")[0]  # tool schema in the system turn


def test_legacy_function_call_functions_and_developer_role(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    example = {
        "functions": [{"name": "lookup", "parameters": {"type": "object"}}],
        "messages": [
            {"role": "developer", "content": "Use tools."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Define "}, {"type": "text", "text": "cat"}],
            },
            {"role": "assistant", "function_call": {"name": "lookup", "arguments": '{"query": "cat"}'}},
            {"role": "function", "name": "lookup", "content": "a small animal"},
            {"role": "assistant", "content": "A small animal."},
        ],
    }
    r = render_example(tok, example)
    assert trained_texts(tok, r) == [
        '<tool_call>\n{"name": "lookup", "arguments": {"query": "cat"}}\n</tool_call><|im_end|>\n',
        "A small animal.<|im_end|>\n",
    ]
    masked = masked_text(tok, r)
    assert masked.startswith("<|im_start|>system\nUse tools.\n\n# Tools")
    assert "Define cat" in masked and "<tool_response>\na small animal\n</tool_response>" in masked


def test_prompt_completion_masks_prompt_and_trains_completion_plus_eos(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    r = render_example(tok, {"prompt": "Q: capital of France?\nA:", "completion": " Paris"})
    assert trained_texts(tok, r) == [" Paris<|im_end|>"]
    assert r.labels[-1] == tok.eos_token_id
    assert masked_text(tok, r) == "Q: capital of France?\nA:"


def test_truncation_cuts_from_the_end(tiny_tokenizer) -> None:
    full = render_example(tiny_tokenizer, MULTI_TURN)
    cut = render_example(tiny_tokenizer, MULTI_TURN, max_seq_len=20)
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]


def test_audit_accepts_good_data(tiny_tokenizer) -> None:
    rendered = audit(tiny_tokenizer, [(3, MULTI_TURN), (4, {"prompt": "a", "completion": "b"})])
    assert [r.n_trained > 0 for r in rendered] == [True, True]


def test_audit_refuses_template_that_drops_the_terminator(fresh_tokenizer) -> None:
    tok = fresh_tokenizer
    # The classic broken template: assistant turns end without <|im_end|>.
    tok.chat_template = tok.chat_template.replace(
        "{{- '<|im_end|>' }}\n{%- endgeneration %}", "{%- endgeneration %}"
    )
    assert "<|im_end|>' }}\n{%- endgeneration" not in tok.chat_template
    with pytest.raises(InvalidRequest) as exc:
        audit(tok, [(7, MULTI_TURN)])
    assert exc.value.code == "terminator_not_trained"
    assert "Line 7" in exc.value.message and "<|im_end|>" in exc.value.message


def test_audit_accepts_pad_equal_to_eos_and_no_pad(fresh_tokenizer) -> None:
    # SmolLM2 ships pad == <|im_end|>, Llama 3 no pad at all: packed training never pads, so both
    # train, and the terminator stays in the labels.
    tok = fresh_tokenizer
    eos = tok.eos_token_id
    tok.pad_token = tok.eos_token
    assert any(eos in r.labels for r in audit(tok, [MULTI_TURN]))
    tok.pad_token = None
    assert any(eos in r.labels for r in audit(tok, [MULTI_TURN]))


def test_audit_refuses_unrenderable_data_naming_the_line(fresh_tokenizer) -> None:
    tok = fresh_tokenizer
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(InvalidRequest) as exc:
        audit(tok, [(12, MULTI_TURN)])
    assert exc.value.code == "invalid_training_file"
    assert "Line 12" in exc.value.message and "roles must alternate" in exc.value.message


def test_template_that_rewrites_history_is_rendered_per_turn(fresh_tokenizer) -> None:
    tok = fresh_tokenizer
    # Like reasoning templates that drop earlier turns' content: earlier turns change later.
    tok.chat_template = (
        "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
        "{%- if m.role == 'assistant' and not loop.last %}...{% else %}{{ m.content }}{% endif %}"
        "<|im_end|>\n{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    )
    (r,) = audit(tok, [MULTI_TURN])
    # "Hello!" is rewritten to "..." once later turns follow: it is trained in its own rendering
    # (the model's view when it said it); the last turn in the full conversation. The weight-0
    # turn is in neither as a label.
    seqs = r.sequences()
    assert len(seqs) == 2 and r.seq_lens == tuple(len(s) for s in seqs)
    assert [trained_texts(tok, s) for s in seqs] == [["Hello!<|im_end|>"], ["Four, sorry.<|im_end|>"]]
    assert tok.decode(seqs[0].input_ids).endswith(
        "<|im_start|>userHi<|im_end|><|im_start|>assistantHello!<|im_end|>"
    )
    assert "<|im_start|>assistant...<|im_end|>" in tok.decode(seqs[1].input_ids)
    assert r.n_trained == sum(s.n_trained for s in seqs)
    # truncation cuts each sequence
    cut = render_example(tok, MULTI_TURN, max_seq_len=10)
    assert cut.truncated and cut.seq_lens == (10, 10)
    # packed, each sequence keeps its own positions and no target crosses into the next one
    (row,) = pack([r, r], max_tokens=8192)
    a, b = r.seq_lens
    assert row.position_ids[0].tolist() == [*range(a), *range(b)] * 2
    targets = row.targets[0].tolist()
    assert [targets[i] for i in (a - 1, a + b - 1)] == [IGNORE_INDEX, IGNORE_INDEX]
    assert targets[: a - 1] == seqs[0].labels[1:]
    assert (
        row.n_targets
        == 2 * n_targets(r)
        == 2 * (r.n_trained - sum(s.labels[0] != IGNORE_INDEX for s in seqs))
    )


def test_audit_refuses_template_that_cannot_locate_a_turn(fresh_tokenizer) -> None:
    tok = fresh_tokenizer
    # Mistral v0.3's way: the system prompt is folded into the *last* user turn only, so a
    # conversation ending with the assistant's turn loses it: no rendering extends the prompt.
    tok.chat_template = (
        "{%- set sys = messages[0].content if messages[0].role == 'system' else none %}"
        "{%- for m in messages if m.role != 'system' %}"
        "{%- if m.role == 'user' %}[INST] {% if loop.last and sys %}{{ sys }}\n\n{% endif %}"
        "{{ m.content }}[/INST]{%- else %} {{ m.content }}<|im_end|>{%- endif %}{%- endfor %}"
    )
    with pytest.raises(InvalidRequest) as exc:
        audit(tok, [MULTI_TURN])
    assert exc.value.code == "unsupported_chat_template"


def test_default_template_for_models_without_one(fresh_tokenizer) -> None:
    tok = fresh_tokenizer
    tok.chat_template = None
    assert ensure_chat_template(tok) is True
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    assert ensure_chat_template(tok) is False
    (r,) = audit(tok, [MULTI_TURN])
    assert trained_texts(tok, r) == ["Hello!<|im_end|>\n", "Four, sorry.<|im_end|>\n"]
