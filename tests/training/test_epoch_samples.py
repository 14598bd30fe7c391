"""Epoch-end samples: the model's greedy short answers to a few held prompts, as events."""

from __future__ import annotations

from tests.training.helpers import QA, Recorder, chat, greedy, write_jsonl
from tuneforge.training import Hyperparameters, TrainSpec, train
from tuneforge.training.sft import EPOCH_SAMPLES, SAMPLE_MAX_TOKENS, sample_prompts


def test_each_epoch_records_answers_to_validation_prompts_beside_the_expected(tiny_model_dir, tmp_path):
    rec = Recorder()
    result = train(
        TrainSpec(
            base_model=str(tiny_model_dir),
            output_dir=tmp_path / "run",
            training_file=write_jsonl(tmp_path / "t.jsonl", [chat(q, a) for q, a in QA]),
            validation_file=write_jsonl(tmp_path / "v.jsonl", [chat(q, a) for q, a in QA[5:]]),
            hyperparameters=Hyperparameters(n_epochs=2, batch_size=5),
        ),
        rec,
    )
    assert result.status == "succeeded"
    samples = [(m, d) for m, d in rec.event_data if d and "samples" in d]
    assert [m for m, _ in samples] == ["Epoch 1 samples", "Epoch 2 samples"]
    for epoch, (_, data) in enumerate(samples, start=1):
        assert data["epoch"] == epoch
        rows = data["samples"]
        assert [(r["prompt"], r["expected"]) for r in rows] == QA[5 : 5 + EPOCH_SAMPLES]  # validation first
        assert all(isinstance(r["answer"], str) for r in rows)
    # samples come after the epoch's checkpoint, and before training finished
    messages = [m for _, m in rec.events]
    assert messages.index("Epoch 2 samples") < len(messages) - 1

    # the last epoch's answers (one padded batch) are what the final model answers alone
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(result.final_dir)
    model = AutoPeftModelForCausalLM.from_pretrained(result.final_dir).eval()
    for row in samples[-1][1]["samples"]:
        alone = greedy(model, tok, row["prompt"], max_new_tokens=SAMPLE_MAX_TOKENS)
        assert row["answer"] == tok.decode(alone, skip_special_tokens=True).strip()


def test_prompts_fall_back_to_training_examples_and_skip_non_text_answers():
    examples = list(
        enumerate(
            [
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello."},
                    ]
                },
                {
                    "messages": [
                        {"role": "user", "content": "Weather?"},
                        {
                            "role": "assistant",
                            "tool_calls": [
                                {"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                            ],
                        },
                    ]
                },
                {
                    "messages": [
                        {"role": "user", "content": "One"},
                        {"role": "assistant", "content": "1"},
                        {"role": "user", "content": "Two"},
                        {"role": "assistant", "content": "2"},
                    ]
                },
            ],
            start=1,
        )
    )
    got = sample_prompts(examples)
    assert [(s["prompt"], s["expected"]) for s in got] == [("Hi", "Hello."), ("Two", "2")]
    assert got[0]["messages"][0] == {"role": "system", "content": "Be brief."}  # prompt keeps context
    assert len(got[1]["messages"]) == 3  # up to the last answer
    assert sample_prompts(examples, k=1) == got[:1]
