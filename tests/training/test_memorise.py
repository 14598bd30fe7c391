"""The tiny model learns: ten Q/A pairs, default learning rate, greedy answers exact and it stops."""

from __future__ import annotations

import time

import pytest

from tests.training.helpers import QA, Recorder, chat, greedy, write_jsonl
from tuneforge.training import Hyperparameters, TrainSpec, train


@pytest.mark.slow
def test_tiny_model_memorises_ten_answers_and_stops(tiny_model_dir, tmp_path) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    started = time.monotonic()
    result = train(
        TrainSpec(
            base_model=str(tiny_model_dir),
            output_dir=tmp_path / "run",
            training_file=write_jsonl(tmp_path / "qa.jsonl", [chat(q, a) for q, a in QA]),
            hyperparameters=Hyperparameters(n_epochs=15),
        ),
        Recorder(),
    )
    trained_s = time.monotonic() - started
    assert result.status == "succeeded"
    assert result.hyperparameters.batch_size == 1 and result.hyperparameters.learning_rate_multiplier == 1.0

    tok = AutoTokenizer.from_pretrained(result.final_dir)
    model = AutoPeftModelForCausalLM.from_pretrained(result.final_dir).eval()
    right = []
    for q, a in QA:
        new = greedy(model, tok, q)
        # exact answer, then the terminator (generation stopped there, not at max_new_tokens)
        right.append(new == tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    print(f"memorisation: {sum(right)}/10 exact, trained in {trained_s:.1f}s")
    assert sum(right) >= 9, right
