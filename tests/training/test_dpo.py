"""DPO (training/dpo.py) on tuneforge-tiny: the loss against TRL's, log 2 at the first step, a
preference learned on held-out pairs, the reference of an `ft:` start, pause/resume, cancel."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import Recorder, stop_at, write_jsonl
from tuneforge.errors import InvalidRequest
from tuneforge.training import Hyperparameters, StopRequest, TrainSpec
from tuneforge.training.dpo import REFERENCE_FILE, dpo_loss, load_pairs, pack_pairs, pair_logps, train

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "piano",
    "lemon",
    "comet",
    "maple",
    "ocean",
    "pearl",
    "robot",
    "sugar",
    "tulip",
    "violet",
    "wagon",
]


def pair(word: str) -> dict:
    """The synthetic preference: the preferred answer ends with 'Cheers.', the other does not."""
    return {
        "input": {"messages": [{"role": "user", "content": f"Tell me about {word}."}]},
        "preferred_output": [{"role": "assistant", "content": f"{word} is nice. Cheers."}],
        "non_preferred_output": [{"role": "assistant", "content": f"{word} is nice."}],
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dpo_data")
    return {
        "train": write_jsonl(d / "train.jsonl", [pair(w) for w in WORDS[:10]]),
        "valid": write_jsonl(d / "valid.jsonl", [pair(w) for w in WORDS[10:13]]),
        "held_out": write_jsonl(d / "held_out.jsonl", [pair(w) for w in WORDS[13:]]),
    }


def _spec(model_dir: Path, data: dict[str, Path], out: Path, **kw) -> TrainSpec:
    hp = kw.pop("hyperparameters", Hyperparameters(n_epochs=3, batch_size=5))
    return TrainSpec(
        base_model=str(model_dir),
        training_file=data["train"],
        output_dir=out,
        method_type="dpo",
        seed=3,
        hyperparameters=hp,
        **kw,
    )


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, data, tmp_path_factory):
    rec = Recorder()
    out = tmp_path_factory.mktemp("dpo_run") / "run"
    result = train(_spec(tiny_model_dir, data, out, validation_file=data["valid"]), rec)
    return rec, result, out


def _load(model_dir: Path, adapter: Path | None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return (PeftModel.from_pretrained(model, str(adapter)) if adapter else model).eval()


@torch.no_grad()
def _margins(model, tokenizer, path: Path) -> torch.Tensor:
    """log p(preferred) - log p(non-preferred) per pair of `path`."""
    pairs = load_pairs(tokenizer, path, 2048)
    out = torch.zeros(len(pairs))
    for row in pack_pairs(pairs, 8192):
        lp = pair_logps(model, row, torch.device("cpu"))
        out[[p.index for p in row.pairs]] = lp[:, 0] - lp[:, 1]
    return out


def test_loss_and_rewards_equal_trls_dpo_trainer_on_one_batch(
    tiny_model_dir, tiny_tokenizer, data, tmp_path
) -> None:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)  # a policy away from the reference: random LoRA B matrices
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    examples = [pair(w) for w in WORDS[:4]]
    examples[1]["non_preferred_output"][0]["content"] = "No."  # sides of different lengths
    rows = [
        {
            "prompt": e["input"]["messages"],
            "chosen": e["preferred_output"],
            "rejected": e["non_preferred_output"],
        }
        for e in examples
    ]
    trainer = DPOTrainer(
        model=model,
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=DPOConfig(
            output_dir=str(tmp_path / "trl"),
            beta=0.1,
            bf16=False,
            per_device_train_batch_size=4,
            report_to=[],
            use_cpu=True,
            max_length=None,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tiny_tokenizer,
    )
    model.eval()
    with torch.no_grad():
        trl_loss = trainer._compute_loss(model, next(iter(trainer.get_train_dataloader())), False)
    trl = {k: v[-1] for k, v in trainer._metrics["eval"].items()}

    pairs = load_pairs(tiny_tokenizer, write_jsonl(tmp_path / "p.jsonl", examples), 2048)
    (row,) = pack_pairs(pairs, 8192)  # the four pairs in one packed forward
    with torch.no_grad():
        policy = pair_logps(model, row, torch.device("cpu"))
        with model.disable_adapter():  # a new adapter's reference: the base model
            reference = pair_logps(model, row, torch.device("cpu"))
    losses, chosen, rejected = dpo_loss(policy, reference, 0.1)
    ours = {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "logps/chosen": policy[:, 0].mean().item(),
        "logps/rejected": policy[:, 1].mean().item(),
    }
    assert abs(ours["rewards/margins"]) > 0.01  # not the trivial policy == reference case
    assert losses.mean().item() == pytest.approx(trl_loss.item(), abs=1e-4)
    for key, value in ours.items():
        assert value == pytest.approx(trl[key], abs=1e-4), key


def test_first_step_is_log_2_and_the_preference_holds_on_held_out_pairs(
    dpo_run, tiny_model_dir, tiny_tokenizer, data
) -> None:
    rec, result, out = dpo_run
    assert result.status == "succeeded" and (result.steps, result.total_steps) == (6, 6)
    assert result.hyperparameters.beta == 0.1 and rec.hp == [result.hyperparameters]
    first = rec.steps[0]
    assert first["train_loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference
    # policy == reference up to rounding: bf16 autocast (where hardware.py measures it faster)
    # rounds a pair's log-probs differently in the step's rows than in the reference pass's
    assert abs(first["train_rewards_margin"]) < 5e-3
    last = rec.steps[-1]
    assert last["train_loss"] < 0.5 * math.log(2) and last["train_rewards_accuracy"] == 1.0
    assert last["full_valid_rewards_accuracy"] == 1.0 and last["full_valid_rewards_margin"] > 0.5
    # billed tokens: both sides of every pair, once per epoch
    pairs = load_pairs(tiny_tokenizer, data["train"], 2048)
    assert result.trained_tokens == 3 * sum(len(p) for p in pairs)

    # held-out pairs (never trained or validated on): the trained model prefers the preferred side
    # by more than the starting model did, on every pair
    before = _margins(_load(tiny_model_dir, None), tiny_tokenizer, data["held_out"])
    after = _margins(_load(tiny_model_dir, out / "final"), tiny_tokenizer, data["held_out"])
    accuracy = (after > before).float().mean().item()
    assert accuracy == 1.0 and (after - before).mean().item() > 5.0

    # a servable checkpoint per epoch, the metrics file with DPO columns, no state left behind
    assert [c[:2] for c in rec.checkpoints] == [(2, 1), (4, 2), (6, 3)]
    meta = json.loads((out / "final" / "tuneforge.json").read_text())
    assert meta["kind"] == "lora" and meta["hyperparameters"]["beta"] == 0.1
    with (out / "step_metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert float(rows[0]["train_loss"]) == pytest.approx(math.log(2), abs=1e-3)
    assert {"train_rewards_accuracy", "train_rewards_margin", "valid_loss"} <= set(rows[0])
    assert not (out / "state").exists() and not (out / REFERENCE_FILE).exists()


def test_an_ft_start_is_its_own_reference(dpo_run, tiny_model_dir, data, tmp_path) -> None:
    """Continuing from a fine-tuned adapter: the reference is that adapter, not the base model, so
    the first step is log 2 again (against the base it would be far lower: the margin is large)."""
    _rec, _result, out = dpo_run
    rec = Recorder()
    result = train(
        _spec(
            tiny_model_dir,
            data,
            tmp_path / "run",
            init_adapter=out / "final",
            hyperparameters=Hyperparameters(n_epochs=1, batch_size=5),
        ),
        rec,
    )
    assert result.status == "succeeded"
    assert rec.steps[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-3)


@pytest.mark.slow
def test_pause_and_resume_give_the_same_weights_as_one_run(tiny_model_dir, data, tmp_path) -> None:
    hp = Hyperparameters(n_epochs=2, batch_size=5)
    whole = train(_spec(tiny_model_dir, data, tmp_path / "whole", hyperparameters=hp), Recorder())

    out = tmp_path / "paused"
    paused = train(
        _spec(tiny_model_dir, data, out, hyperparameters=hp), Recorder(stop_at(1, StopRequest.PAUSE))
    )
    assert paused.status == "paused" and paused.steps == 1
    assert (out / "state").is_dir() and (out / REFERENCE_FILE).is_file()
    rec = Recorder()
    resumed = train(_spec(tiny_model_dir, data, out, hyperparameters=hp), rec)
    assert resumed.status == "succeeded" and [m["step"] for m in rec.steps] == [2, 3, 4]
    a, b = (
        load_file(str(whole.final_dir / "adapter_model.safetensors")),
        load_file(str(resumed.final_dir / "adapter_model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.trained_tokens == whole.trained_tokens

    # a crash (kill -9) after the first epoch: the next run continues from the epoch's state and
    # the kept reference log-probs, and ends with the same weights
    class Crash(Recorder):
        def metrics(self, data):
            super().metrics(data)
            if data["step"] == 3:
                raise KeyboardInterrupt  # dies mid-epoch 2, nothing saved since step 2

    out = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        train(_spec(tiny_model_dir, data, out, hyperparameters=hp), Crash())
    rec = Recorder()
    recovered = train(_spec(tiny_model_dir, data, out, hyperparameters=hp), rec)
    assert [m["step"] for m in rec.steps] == [3, 4]
    c = load_file(str(recovered.final_dir / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_cancel_stops_and_a_bad_pair_names_its_line(tiny_model_dir, data, tmp_path) -> None:
    import tuneforge.training

    # the library's train() picks the trainer by spec.method_type
    rec = Recorder(stop_at(1, StopRequest.CANCEL))
    result = tuneforge.training.train(_spec(tiny_model_dir, data, tmp_path / "c"), rec)
    assert result.status == "cancelled" and result.steps == 1
    assert "train_rewards_margin" in rec.steps[0]
    # a cancel that lands while the reference log-probs are computed, before any step
    early = train(_spec(tiny_model_dir, data, tmp_path / "c0"), Recorder(lambda _: StopRequest.CANCEL))
    assert early.status == "cancelled" and early.steps == 0

    bad = [pair(w) for w in WORDS[:3]] + [
        {
            "input": {"messages": [{"role": "user", "content": "q"}]},
            "preferred_output": [],
            "non_preferred_output": [],
        }
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    with pytest.raises(InvalidRequest) as err:
        train(_spec(tiny_model_dir, {"train": path}, tmp_path / "b"), Recorder())
    assert err.value.message.startswith("Line 4: ") and "preferred_output" in err.value.message


def test_the_shared_prompt_is_computed_once_and_each_side_scores_as_if_alone(
    tiny_model_dir, tiny_tokenizer, tmp_path
) -> None:
    """The tree layout (prompt once, both outputs on it) gives every side the log-probs it has as a
    sequence of its own, in a row of several pairs."""
    from transformers import AutoModelForCausalLM

    from tuneforge.training.batches import shifted_targets
    from tuneforge.training.render import IGNORE_INDEX

    examples = [pair(w) for w in WORDS[:3]]
    examples[1]["input"]["messages"] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me about river."},
    ]
    examples[2]["non_preferred_output"][0]["content"] = "No."
    pairs = load_pairs(tiny_tokenizer, write_jsonl(tmp_path / "p.jsonl", examples), 2048)
    (row,) = pack_pairs(pairs, 8192)
    shared = int(row.shared.sum())
    assert shared > 0 and row.input_ids.shape[1] == sum(len(p) for p in pairs) - shared
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        tree = pair_logps(model, row, torch.device("cpu"))
        for k, p in enumerate(pairs):
            for side, r in enumerate((p.chosen, p.rejected)):
                logits = model(input_ids=torch.tensor([r.input_ids])).logits[0]
                targets = torch.tensor(shifted_targets(r))
                keep = targets != IGNORE_INDEX
                alone = torch.log_softmax(logits[keep], -1).gather(1, targets[keep, None]).sum()
                assert tree[k, side].item() == pytest.approx(alone.item(), abs=1e-4), (k, side)


@pytest.mark.parametrize("name", ["llama3", "qwen2.5", "qwen3", "gemma3", "mistral", "smollm2", "phi3"])
def test_each_side_trains_only_its_output_turn_with_the_terminator(tiny_model_dir, tmp_path, name) -> None:
    """Multi-turn input (an earlier assistant turn, masked) and per-turn templates (Qwen3, Phi-3
    rewrite history): a side's trained tokens are exactly what the model generates for the output."""
    from tests.training.templates import FAMILIES, family_tokenizer
    from tuneforge.training.render import IGNORE_INDEX

    family = FAMILIES[name]
    tok = family_tokenizer(tiny_model_dir, family)
    example = {
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi."},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "What is 2 + 2?"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "Four. Cheers."}],
        "non_preferred_output": [{"role": "assistant", "content": "Five."}],
    }
    (p,) = load_pairs(tok, write_jsonl(tmp_path / "p.jsonl", [example]), 2048)
    for side, answer in ((p.chosen, "Four. Cheers."), (p.rejected, "Five.")):
        trained = [t for t in side.labels if t != IGNORE_INDEX]
        assert tok.decode(trained) == family.turn.format(answer)
    (row,) = pack_pairs([p], 8192)
    # one-sequence renderings share their prompt (computed once); per-turn ones share nothing
    shared = int(row.shared.sum())
    assert (shared > 0) == (p.chosen.seq_lens is None and p.rejected.seq_lens is None)
    assert row.sequence.max().item() == 1 and row.input_ids.shape[1] == len(p) - shared
