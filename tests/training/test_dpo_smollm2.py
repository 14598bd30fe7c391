"""DPO on a real model: SmolLM2-135M-Instruct exactly as published (its GGUF file, de-quantised
once), the real-model tier of tests/training/test_dpo.py.

A short LoRA run on preference pairs whose preferred answer ends with a sign-off the model does
not give by itself ("Hope that helps!") raises, on *held-out* pairs (other questions, never trained
on), both the preference accuracy (share of pairs where the model gives the preferred answer the
higher log-probability) and the mean margin log p(preferred) - log p(non-preferred) over the
starting model's; and the implicit reward (the margin's change) is positive on nearly every pair.

Budget: 16 pairs, 1 epoch, batch 4 (4 steps), max length 64; the test prints its times. On a
quiet 2-core EPYC: 100 s in all (de-quantising 25 s, training 52 s); under heavy load (load
average 15-22) 700 s. Accuracy 0.00 -> 1.00, margin -15.3 -> +12.5 nats.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.training.helpers import Recorder, write_jsonl
from tuneforge import gguf
from tuneforge.training import Hyperparameters, TrainSpec
from tuneforge.training.dpo import load_pairs, pack_pairs, pair_logps, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # de-quantising: minutes on a loaded machine

SIGN_OFF = "Hope that helps!"
TRAIN = [
    ("What color is the sky on a clear day?", "Blue"),
    ("What do bees make?", "Honey"),
    ("Which animal says moo?", "A cow"),
    ("What is frozen water called?", "Ice"),
    ("What do you call a baby dog?", "A puppy"),
    ("Which planet do we live on?", "Earth"),
    ("What is the opposite of hot?", "Cold"),
    ("Which fruit is yellow and long?", "A banana"),
    ("How many legs does a spider have?", "Eight"),
    ("What is the largest ocean?", "The Pacific"),
    ("Which season comes after winter?", "Spring"),
    ("What do you use to write on paper?", "A pen"),
    ("What is the capital of France?", "Paris"),
    ("Which animal has a trunk?", "An elephant"),
    ("What color is grass?", "Green"),
    ("What is the opposite of day?", "Night"),
]
HELD_OUT = [
    ("What color are bananas?", "Yellow"),
    ("Which animal barks?", "A dog"),
    ("What is the capital of Germany?", "Berlin"),
    ("How many days are in a week?", "Seven"),
    ("What do birds use to fly?", "Wings"),
    ("Which animal gives us wool?", "A sheep"),
    ("What is the opposite of up?", "Down"),
    ("What is the capital of Japan?", "Tokyo"),
    ("Which planet is red?", "Mars"),
    ("What color is a lemon?", "Yellow"),
    ("What is the last month of the year?", "December"),
    ("What do chickens lay?", "Eggs"),
]
MAX_LEN = 64


def pair(question: str, answer: str) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": f"{answer}. {SIGN_OFF}"}],
        "non_preferred_output": [{"role": "assistant", "content": f"{answer}."}],
    }


@pytest.fixture(scope="module")
def smollm2_dir(smollm2_gguf, tmp_path_factory) -> Path:
    t = time.monotonic()
    out = gguf.ensure_hf_dir(tmp_path_factory.mktemp("models"), smollm2_gguf)
    print(f"\nde-quantising SmolLM2: {time.monotonic() - t:.1f}s")
    return out


@torch.no_grad()
def margins(model, tokenizer, path: Path) -> torch.Tensor:
    """log p(preferred) - log p(non-preferred) per pair of `path`."""
    pairs = load_pairs(tokenizer, path, MAX_LEN)
    out = torch.zeros(len(pairs))
    for row in pack_pairs(pairs, 4096):
        lp = pair_logps(model, row, torch.device("cpu"))
        out[[p.index for p in row.pairs]] = lp[:, 0] - lp[:, 1]
    return out


def test_dpo_on_smollm2_raises_held_out_preference_accuracy_and_margin(smollm2_dir, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not {q for q, _ in HELD_OUT} & {q for q, _ in TRAIN}
    train_file = write_jsonl(tmp_path / "train.jsonl", [pair(q, a) for q, a in TRAIN])
    held_out = write_jsonl(tmp_path / "held_out.jsonl", [pair(q, a) for q, a in HELD_OUT])
    spec = TrainSpec(
        base_model=str(smollm2_dir),
        training_file=train_file,
        output_dir=tmp_path / "run",
        method_type="dpo",
        seed=7,
        max_seq_len=MAX_LEN,
        hyperparameters=Hyperparameters(n_epochs=1, batch_size=4),
    )
    rec = Recorder()
    t = time.monotonic()
    result = train(spec, rec)
    seconds = time.monotonic() - t
    assert len(TRAIN) == 16 and result.status == "succeeded" and result.steps == 4
    print(
        f"DPO on SmolLM2: {seconds:.1f}s for {result.steps} steps ({result.trained_tokens} tokens); "
        f"losses {[round(m['train_loss'], 3) for m in rec.steps]}"
    )

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    before = margins(base, tokenizer, held_out)
    tuned = PeftModel.from_pretrained(base, str(result.final_dir)).eval()
    after = margins(tuned, tokenizer, held_out)
    acc_before, acc_after = (before > 0).float().mean().item(), (after > 0).float().mean().item()
    print(
        f"held-out preference accuracy {acc_before:.2f} -> {acc_after:.2f}, "
        f"margin {before.mean().item():.2f} -> {after.mean().item():.2f} nats; "
        f"implicit reward accuracy {(after > before).float().mean().item():.2f}"
    )
    assert acc_after >= acc_before + 0.5
    assert after.mean().item() >= before.mean().item() + 2.0
    assert (after > before).float().mean().item() >= 0.9
    # the run's own reward accuracy climbed from the log 2 start
    assert rec.steps[-1]["train_rewards_accuracy"] > rec.steps[0]["train_rewards_accuracy"]
    assert json.loads((result.final_dir / "tuneforge.json").read_text())["hyperparameters"]["beta"] == 0.1
