"""The model families users fine-tune, end to end through their chat templates (tests/training/
templates.py: Llama 3, Qwen2.5, Qwen3, Gemma 2/3, Mistral, SmolLM2, Phi-3, each with its quirks).

For each family: the label mask (only assistant turns with weight != 0 trained; system, user and
tool text masked), the terminator inside the trained labels of every assistant turn, and a served
answer that stops: tuneforge-tiny with the family's tokenizer learns two examples, then our
serving engine answers with the family's template, exactly the trained answer, ending on the
family's stop token."""

from __future__ import annotations

import asyncio

import pytest

from tests.training.helpers import WEATHER_TOOL, Recorder, weather_call, write_jsonl
from tests.training.templates import FAMILIES, build_family_model, family_tokenizer, stop_ids
from tuneforge.errors import InvalidRequest
from tuneforge.training.batch_render import render_batch
from tuneforge.training.render import IGNORE_INDEX, audit, pad_id, render_example, trained_spans

NAMES = list(FAMILIES)

CONV = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Five.", "weight": 0},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Four, sorry."},
    ]
}
# Templates that rewrite earlier turns: the turns rendered on their own (render.py).
SEQUENCES = {"qwen3": 2, "phi3": 2}

TOOLS = [WEATHER_TOOL]
TOOL_CONV = {
    "tools": TOOLS,
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        *weather_call("c1"),
        {"role": "assistant", "content": "22 degrees."},
    ],
}


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    return {name: family_tokenizer(tiny_model_dir, f) for name, f in FAMILIES.items()}


def texts(tok, ids, labels) -> list[str]:
    return [tok.decode(ids[a:b]) for a, b in trained_spans(labels)]


@pytest.mark.parametrize("name", NAMES)
def test_label_mask_and_trained_terminator(tokenizers, name) -> None:
    family, tok = FAMILIES[name], tokenizers[name]
    (r,) = audit(tok, [CONV], stop_ids=stop_ids(tok, family))
    seqs = r.sequences()
    assert len(seqs) == SEQUENCES.get(name, 1)
    # every trained turn, as the model generates it (Qwen3: with its empty think block), and
    # nothing else: not the system text, the user turns or the weight-0 turn
    trained = [t for s in seqs for t in texts(tok, s.input_ids, s.labels)]
    assert trained == [family.turn.format("Hello!"), family.turn.format("Four, sorry.")]
    terminator = tok.convert_tokens_to_ids(family.terminator)
    for s in seqs:
        for a, b in trained_spans(s.labels):
            assert terminator in s.labels[a:b]
    masked = tok.decode([i for s in seqs for i, lab in zip(s.input_ids, s.labels) if lab == IGNORE_INDEX])
    for text in ("Be brief.", "Hi", "What is two plus two?", "Five.", "Sure?"):
        assert text in masked
    # the batched renderer gives the same result
    assert render_batch(tok, [CONV]).rendered == [render_example(tok, CONV)]
    # pad == EOS (SmolLM2, Phi-3) and no pad (Llama 3, Mistral) are accepted as published
    assert tok.pad_token == family.pad


def test_gemma_terminator_comes_from_the_generation_config(tokenizers) -> None:
    # Gemma's tokenizer EOS is <eos>, which its template never writes: only the generation
    # config's <end_of_turn> makes the turns' terminator a trained stop token.
    tok = tokenizers["gemma3"]
    with pytest.raises(InvalidRequest) as exc:
        audit(tok, [CONV])
    assert exc.value.code == "terminator_not_trained"
    assert audit(tok, [CONV], stop_ids=stop_ids(tok, FAMILIES["gemma3"]))


def test_gemma2_refuses_a_system_message_naming_the_line(tiny_model_dir) -> None:
    from tests.training.templates import GEMMA2

    tok = family_tokenizer(tiny_model_dir, FAMILIES["gemma3"])
    tok.chat_template = GEMMA2
    stops = stop_ids(tok, FAMILIES["gemma3"])
    no_system = {"messages": CONV["messages"][1:]}
    (r,) = audit(tok, [no_system], stop_ids=stops)
    assert texts(tok, r.input_ids, r.labels) == ["Hello!<end_of_turn>\n", "Four, sorry.<end_of_turn>\n"]
    with pytest.raises(InvalidRequest) as exc:
        audit(tok, [(1, no_system), (2, CONV)], stop_ids=stops)
    assert exc.value.code == "invalid_training_file"
    assert "Line 2" in exc.value.message and "System role not supported" in exc.value.message


def test_qwen25_tool_calls_trained_tool_text_masked(tokenizers) -> None:
    tok = tokenizers["qwen2.5"]
    (r,) = audit(tok, [TOOL_CONV], stop_ids=stop_ids(tok, FAMILIES["qwen2.5"]))
    assert texts(tok, r.input_ids, r.labels) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call><|im_end|>\n',
        "22 degrees.<|im_end|>\n",
    ]
    masked = tok.decode([i for i, lab in zip(r.input_ids, r.labels) if lab == IGNORE_INDEX])
    assert "You are Qwen" in masked and '"name": "get_weather"' in masked
    assert '<tool_response>\n{"temperature": 22}\n</tool_response>' in masked


def test_qwen3_reasoning_each_turn_trained_as_the_model_saw_it(tokenizers) -> None:
    tok = tokenizers["qwen3"]
    example = {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "reasoning_content": "Use the tool.",
                "tool_calls": TOOL_CONV["messages"][1]["tool_calls"],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 22}'},
            {"role": "assistant", "content": "<think>\nWarm.\n</think>\n\n22 degrees."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You are welcome."},
        ],
    }
    (r,) = audit(tok, [example], stop_ids=stop_ids(tok, FAMILIES["qwen3"]))
    seqs = r.sequences()
    # turns 1 and 3 come before the last user query: the full rendering drops their reasoning,
    # so each is trained in its own rendering, with it; the last turn in the full conversation.
    assert [texts(tok, s.input_ids, s.labels) for s in seqs] == [
        [
            (
                '<think>\nUse the tool.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
                '{"location": "Paris"}}\n</tool_call><|im_end|>\n'
            )
        ],
        ["<think>\nWarm.\n</think>\n\n22 degrees.<|im_end|>\n"],
        ["<think>\n\n</think>\n\nYou are welcome.<|im_end|>\n"],
    ]
    full = tok.decode(seqs[-1].input_ids)
    assert "Use the tool." not in full and "Warm." not in full
    assert "<|im_start|>assistant\n22 degrees.<|im_end|>" in full
    # each sequence is what the model saw: the tool schema in every one
    assert all('"name": "get_weather"' in tok.decode(s.input_ids) for s in seqs)
    assert render_batch(tok, [example]).rendered == [r]


def test_per_turn_sequences_are_billed_as_the_trainer_cuts_them(tokenizers, tmp_path) -> None:
    from tuneforge.training.data import validate_file

    tok = tokenizers["qwen3"]
    examples = [CONV, {"messages": CONV["messages"][:3]}]
    rendered = render_batch(tok, examples, max_seq_len=40).rendered
    assert [r.seq_lens for r in rendered] == [(37, 40), None]  # each sequence cut on its own
    report = validate_file(
        write_jsonl(tmp_path / "t.jsonl", examples), tokenizer=tok, max_seq_len=40, n_epochs=1
    )
    assert report.billing_tokens == sum(len(r) for r in rendered) and report.n_too_long == 1


# ---- a safe pad where one is needed (batched serving) -------------------------------------------

# The published pad when it is no stop token, else unk, else the lowest id that is no stop token:
# Llama 3 (no pad) id 0, tuneforge-tiny's first token here ("!" in the published vocabulary);
# Qwen's pad <|endoftext|> is one of its generation config's EOS ids: id 1 here.
SAFE_PAD = {
    "llama3": "<|endoftext|>",
    "qwen2.5": "<|im_start|>",
    "qwen3": "<|im_start|>",
    "gemma3": "<pad>",
    "mistral": "<unk>",
    "smollm2": "<|endoftext|>",
    "phi3": "<unk>",
}


@pytest.mark.parametrize("name", NAMES)
def test_pad_id_is_never_a_stop_token(tokenizers, name) -> None:
    tok = tokenizers[name]
    pad = pad_id(tok, stop_ids(tok, FAMILIES[name]))
    assert pad not in stop_ids(tok, FAMILIES[name])
    assert tok.convert_ids_to_tokens(pad) == SAFE_PAD[name]


@pytest.mark.parametrize("name", ["llama3", "smollm2"])  # no pad; pad == EOS
def test_batched_serving_of_prompts_of_different_lengths(tiny_model_dir, tmp_path, engine, name) -> None:
    from tuneforge.inference.types import ModelTarget, SamplingParams

    base = build_family_model(tiny_model_dir, FAMILIES[name], tmp_path / "base")
    target = ModelTarget(name, str(base), str(base))
    prompts = [
        [{"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "You are a helpful assistant. Please answer the question."},
            {"role": "user", "content": "What is the capital of France? Paris or Rome?"},
        ],
        [{"role": "user", "content": "What colour is the sky?"}],
    ]
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)

    async def one(messages):
        from tuneforge.inference.types import Delta

        ids = await engine.prepare_chat(target, messages)
        return "".join(
            [ev.text async for ev in engine.generate(target, ids, params) if isinstance(ev, Delta)]
        )

    async def together():
        return await asyncio.gather(*[one(m) for m in prompts * 2])

    alone = [asyncio.run(one(m)) for m in prompts]
    assert asyncio.run(together()) == alone * 2


# ---- served answers that stop ------------------------------------------------------------------

QUESTIONS = [("What is the capital of France?", "Paris."), ("Who wrote Hamlet?", "Shakespeare.")]


def training_data(name: str) -> tuple[list[dict], list[tuple[list[dict], str]]]:
    """(training examples, [(prompt messages, expected served text)])."""
    family = FAMILIES[name]
    if (
        name == "qwen3"
    ):  # two turns: the first trained as generated (empty think), the second with its reasoning
        conv = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": QUESTIONS[0][0]},
            {"role": "assistant", "content": "Paris.", "reasoning_content": "France."},
        ]
        return [{"messages": conv}], [
            (conv[:1], family.reply("Hello!")),
            (conv[:3], "<think>\nFrance.\n</think>\n\nParis."),
        ]
    examples, prompts = [], []
    for k, (q, a) in enumerate(QUESTIONS):
        msgs = ([{"role": "system", "content": "Be brief."}] if k == 0 else []) + [
            {"role": "user", "content": q}
        ]
        examples.append({"messages": msgs + [{"role": "assistant", "content": a}]})
        prompts.append((msgs, family.reply(a)))
    return examples, prompts


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tuneforge.config import Settings
    from tuneforge.inference.engine import Engine

    eng = Engine(Settings(data_dir=tmp_path_factory.mktemp("serve"), inference_device="cpu").resolved())
    yield eng
    eng.close()


async def answer(engine, target, messages):
    from tuneforge.inference.types import Delta, SamplingParams

    ids = await engine.prepare_chat(target, messages)
    text, lps, fin = [], [], None
    async for ev in engine.generate(target, ids, SamplingParams(max_tokens=40, temperature=0, logprobs=True)):
        if isinstance(ev, Delta):
            text.append(ev.text)
            lps += ev.logprobs
        else:
            fin = ev
    return "".join(text), lps, fin


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_fine_tune_serves_the_trained_answer_and_stops(tiny_model_dir, tmp_path, engine, name) -> None:
    from tuneforge.inference.types import ModelTarget
    from tuneforge.training import Hyperparameters, TrainSpec, train
    from tuneforge.training.data import validate_file

    family = FAMILIES[name]
    base = build_family_model(tiny_model_dir, family, tmp_path / "base")
    examples, prompts = training_data(name)
    path = write_jsonl(tmp_path / "train.jsonl", examples)
    result = train(
        TrainSpec(
            base_model=str(base),
            training_file=path,
            output_dir=tmp_path / "run",
            keep_checkpoints=1,
            hyperparameters=Hyperparameters(n_epochs=EPOCHS, batch_size=1, learning_rate_multiplier=LRM),
        ),
        Recorder(),
    )
    assert result.status == "succeeded"
    # billed as the validator quoted, Qwen3's per-turn sequences included
    report = validate_file(path, tokenizer=family_tokenizer(tiny_model_dir, family), n_epochs=EPOCHS)
    assert result.trained_tokens == report.estimated_trained_tokens

    target = ModelTarget(f"ft:{name}", str(base), str(result.final_dir), str(result.final_dir))
    for messages, expected in prompts:
        text, lps, fin = asyncio.run(answer(engine, target, messages))
        assert (text, fin.reason) == (expected, "stop"), messages
        assert lps[-1].token == family.terminator  # ended on the family's own stop token


EPOCHS, LRM = 20, 3.0  # 12 epochs were enough for every family here
