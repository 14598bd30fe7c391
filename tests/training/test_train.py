"""train(): LoRA and full fine-tuning on real (tiny) models, checkpoints, metrics, pause/resume, cancel."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import QA, Recorder, chat, stop_at, weather_call, write_jsonl
from tuneforge.training import Hyperparameters, StopRequest, TrainSpec, train
from tuneforge.training.batches import n_targets
from tuneforge.training.render import render_example


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {
        "train": write_jsonl(d / "train.jsonl", [chat(q, a) for q, a in QA]),
        "valid": write_jsonl(d / "valid.jsonl", [chat(q, a) for q, a in QA[:4]]),
    }


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def init_adapter(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """A freshly initialised LoRA adapter (B = 0, A random) saved to disk, so a test can compare
    every adapter tensor before and after training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    path = tmp_path_factory.mktemp("init") / "adapter"
    model.save_pretrained(path)
    return path


def test_lora_run_changes_every_adapter_tensor_and_writes_the_run_layout(
    tiny_model_dir, tiny_tokenizer, data, init_adapter, tmp_path
) -> None:
    rec = Recorder()
    out = tmp_path / "run"
    spec = TrainSpec(
        base_model=str(tiny_model_dir),
        training_file=data["train"],
        output_dir=out,
        validation_file=data["valid"],
        keep_checkpoints=2,
        init_adapter=init_adapter,
        export_merged=True,
        hyperparameters=Hyperparameters(n_epochs=3, batch_size=2),
    )
    result = train(spec, rec)

    assert result.status == "succeeded" and result.final_dir == out / "final"
    assert (result.steps, result.total_steps) == (15, 15)
    assert rec.hp == [result.hyperparameters]
    # billable tokens: every token of every example (not only the labels), once per epoch
    per_epoch = sum(len(render_example(tiny_tokenizer, chat(q, a))) for q, a in QA)
    assert per_epoch > sum(n_targets(render_example(tiny_tokenizer, chat(q, a))) for q, a in QA)
    assert result.trained_tokens == 3 * per_epoch

    # every adapter tensor moved (TRL's test: all trainable parameters changed)
    before, after = _adapter(init_adapter), _adapter(out / "final")
    assert before.keys() == after.keys() and len(after) == 4 * 7 * 2  # 4 layers x 7 linears x A,B
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []

    # metrics: one per step; loss falls; validation sampled, full validation at epoch ends
    assert [m["step"] for m in rec.steps] == list(range(1, 16))
    assert all(m["total_steps"] == 15 for m in rec.steps)
    first, last = rec.steps[:5], rec.steps[-5:]
    assert sum(m["train_loss"] for m in last) < 0.8 * sum(m["train_loss"] for m in first)
    assert all(0.0 <= m["train_mean_token_accuracy"] <= 1.0 for m in rec.steps)
    assert [m["step"] for m in rec.steps if "full_valid_loss" in m] == [5, 10, 15]
    assert {m["step"] for m in rec.steps if "valid_loss" in m} >= {5, 10, 15}
    assert rec.steps[-1]["full_valid_loss"] < rec.steps[4]["full_valid_loss"]

    rows = list(csv.reader((out / "step_metrics.csv").open()))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 16))
    assert rows[1][1] == f"{rec.steps[0]['train_loss']:.5f}" and len(rows[1][1].split(".")[1]) == 5
    no_valid = [r for r, m in zip(rows[1:], rec.steps) if "valid_loss" not in m]
    assert no_valid and all(r[3] == r[4] == "" for r in no_valid)
    assert rows[5][3] == f"{rec.steps[4]['valid_loss']:.5f}"

    # checkpoints: one per epoch, the last 2 kept, each servable on its own
    assert [(s, e) for s, e, _, _ in rec.checkpoints] == [(5, 1), (10, 2), (15, 3)]
    assert [s for s, _ in rec.removed] == [5] and not rec.checkpoints[0][2].exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000010", "step-000015"]
    for step, epoch, path, metrics in rec.checkpoints[1:]:
        meta = json.loads((path / "tuneforge.json").read_text())
        assert (meta["kind"], meta["step"], meta["epoch"]) == ("lora", step, epoch)
        assert meta["base_model"] == str(tiny_model_dir.resolve()) and meta["metrics"] == metrics
        assert (path / "chat_template.jinja").read_text() == (
            tiny_model_dir / "chat_template.jinja"
        ).read_text()
        for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
            assert (path / name).is_file()
    assert not (out / "state").exists()  # a finished run keeps no optimizer state

    # the merged export is a plain full model that gives the adapter's outputs
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "final" / "merged")
    adapted = AutoPeftModelForCausalLM.from_pretrained(out / "final")
    ids = torch.tensor([tiny_tokenizer("What colour is the sky?")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)
    assert json.loads((out / "final" / "merged" / "tuneforge.json").read_text())["kind"] == "full"


def test_trained_tokens_equal_the_validators_estimate(tiny_model_dir, tiny_tokenizer, tmp_path) -> None:
    """What a job bills (`trained_tokens`) is what the file's validation quoted: all tokens of each
    example, cut at the context limit, x epochs; here with a multi-turn example with a weight-0
    turn, tools, and examples longer than the limit (truncated)."""
    from tuneforge.training.data import validate_file

    long_answer = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)
    examples = [chat(q, a) for q, a in QA]
    examples += [
        chat("Tell me a long story.", long_answer),
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!", "weight": 0},
                {"role": "user", "content": "What is ten minus three?"},
                {"role": "assistant", "content": "Seven."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                *weather_call("c1"),
                {"role": "assistant", "content": "22 degrees."},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        },
    ]
    path = write_jsonl(tmp_path / "train.jsonl", examples)
    max_len = 64
    report = validate_file(path, tokenizer=tiny_tokenizer, max_seq_len=max_len, n_epochs=2)
    assert report.ok and report.n_too_long >= 2  # the long story and the tools preamble

    result = train(
        TrainSpec(
            base_model=str(tiny_model_dir),
            training_file=path,
            output_dir=tmp_path / "run",
            max_seq_len=max_len,
            keep_checkpoints=1,
            hyperparameters=Hyperparameters(n_epochs=2, batch_size=4),
        ),
        Recorder(),
    )
    assert result.status == "succeeded"
    assert result.trained_tokens == report.estimated_trained_tokens == report.billing_tokens * 2
    untruncated = sum(len(render_example(tiny_tokenizer, e)) for e in examples)
    assert report.billing_tokens < untruncated  # truncation is billed as OpenAI does: capped


def _spec(tiny_model_dir, data, out: Path) -> TrainSpec:
    return TrainSpec(
        base_model=str(tiny_model_dir),
        training_file=data["train"],
        output_dir=out,
        lora_dropout=0.1,
        seed=3,  # dropout: the RNG state must survive the pause
        hyperparameters=Hyperparameters(n_epochs=2, batch_size=3),
    )


def test_pause_and_kill_resume_exactly_like_an_uninterrupted_run(tiny_model_dir, data, tmp_path) -> None:
    reference = train(_spec(tiny_model_dir, data, tmp_path / "ref"), Recorder())
    assert reference.status == "succeeded" and reference.total_steps == 8

    # pause mid-epoch, then resume
    out = tmp_path / "paused"
    paused = train(_spec(tiny_model_dir, data, out), Recorder(stop_at(2, StopRequest.PAUSE)))
    assert (paused.status, paused.steps, paused.final_dir) == ("paused", 2, None)
    assert (out / "state" / "progress.json").is_file()
    resumed_rec = Recorder()
    resumed = train(_spec(tiny_model_dir, data, out), resumed_rec)
    assert resumed.status == "succeeded" and [m["step"] for m in resumed_rec.steps] == list(range(3, 9))
    assert resumed.trained_tokens == reference.trained_tokens

    # a process that dies after epoch 1 (step 4) resumes from the epoch boundary
    out2 = tmp_path / "killed"

    class Killed(Exception):
        pass

    def die(done: int):
        if done == 6:
            raise Killed
        return None

    with pytest.raises(Killed):
        train(_spec(tiny_model_dir, data, out2), Recorder(die))
    after_kill = Recorder()
    train(_spec(tiny_model_dir, data, out2), after_kill)
    assert after_kill.steps[0]["step"] == 5

    ref = _adapter(reference.final_dir)
    for run in (out, out2):
        got = _adapter(run / "final")
        assert got.keys() == ref.keys()
        assert all(torch.equal(got[k], ref[k]) for k in ref), f"{run.name}: weights differ"
        assert (run / "step_metrics.csv").read_text() == (tmp_path / "ref" / "step_metrics.csv").read_text()


def test_cancel_stops_within_seconds_and_writes_no_final_model(tiny_model_dir, data, tmp_path) -> None:
    asked = {}

    def cancel(done: int):
        if done >= 2:
            asked.setdefault("at", time.monotonic())
            return StopRequest.CANCEL
        return None

    out = tmp_path / "run"
    result = train(
        TrainSpec(
            base_model=str(tiny_model_dir),
            training_file=data["train"],
            output_dir=out,
            hyperparameters=Hyperparameters(n_epochs=5, batch_size=1),
        ),
        Recorder(cancel),
    )
    assert time.monotonic() - asked["at"] < 5
    assert (result.status, result.steps, result.final_dir) == ("cancelled", 2, None)
    assert not (out / "final").exists() and not (out / "state").exists()


def test_full_fine_tune_of_a_local_llama_directory_without_chat_template(
    tiny_model_dir, data, tmp_path
) -> None:
    """A real architecture saved with save_pretrained and loaded offline by path; its tokenizer has
    no chat template, so the documented default applies."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    model_dir = tmp_path / "my-llama"
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=None,
        )
    ).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    assert not (model_dir / "chat_template.jinja").exists()

    rec = Recorder()
    out = tmp_path / "run"
    result = train(
        TrainSpec(
            base_model=str(model_dir),
            training_file=data["train"],
            output_dir=out,
            method="full",
            hyperparameters=Hyperparameters(n_epochs=2, batch_size=5, learning_rate_multiplier=50),
        ),
        rec,
    )
    assert result.status == "succeeded"
    assert any(level == "warn" and "no chat template" in msg for level, msg in rec.events)
    assert rec.steps[-1]["train_loss"] < rec.steps[0]["train_loss"]
    final = result.final_dir
    assert json.loads((final / "tuneforge.json").read_text())["kind"] == "full"
    assert (final / "chat_template.jinja").is_file()  # the default template travels with the model
    before = load_file(str(model_dir / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert [k for k in before if torch.equal(before[k], after[k])] == []
    assert AutoModelForCausalLM.from_pretrained(final).config.model_type == "llama"
