"""DPO jobs through a real `tuneforge serve` and the openai SDK: SFT then DPO on the SFT model (the
flow OpenAI recommends), the DPO job object, metrics, checkpoints and result file, serving the
DPO model; bad parameters and bad preference files."""

from __future__ import annotations

import csv
import io
import json

import openai
import pytest

from tests.e2e.test_jobs_training import FAST, jsonl, upload, watch

pytestmark = pytest.mark.slow


def pairs(n: int, offset: int = 0) -> bytes:
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"It is {2 * i}. Cheers."}],
            "non_preferred_output": [{"role": "assistant", "content": f"It is {2 * i}."}],
        }
        for i in range(offset, offset + n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory(FAST)


def test_sft_then_dpo_on_the_sft_model(srv):
    c = srv.client()
    sft = c.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=upload(c, jsonl(10)),
        suffix="sft",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 5}}},
    )
    sft = watch(c, sft.id, {"succeeded", "failed", "cancelled"})
    assert sft.status == "succeeded", sft.error

    train_id = upload(c, pairs(10), "prefs.jsonl")
    valid_id = upload(c, pairs(10, offset=30), "prefs_valid.jsonl")
    job = c.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=train_id,
        validation_file=valid_id,
        suffix="dpo",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto", "n_epochs": 2, "batch_size": 5}}},
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == "auto"
    done = watch(c, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    assert done.model == sft.fine_tuned_model
    # the resolved hyperparameters, beta included (auto -> 0.1)
    hp = done.method.dpo.hyperparameters
    assert (hp.beta, hp.n_epochs, hp.batch_size) == (0.1, 2, 5)
    assert done.trained_tokens > 0 and done.fine_tuned_model.startswith("ft:tuneforge-tiny:")

    metrics = [e.data for e in c.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"][::-1]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert abs(metrics[0]["train_loss"] - 0.6931) < 1e-3  # the SFT model is the reference
    assert {
        "train_rewards_chosen",
        "train_rewards_rejected",
        "train_rewards_accuracy",
        "train_rewards_margin",
    } <= set(metrics[0])
    assert "full_valid_rewards_accuracy" in metrics[-1]

    ckpts = c.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [k.step_number for k in ckpts] == [4, 2]
    assert ckpts[0].metrics.train_loss is not None
    rows = list(csv.reader(io.StringIO(c.files.content(done.result_files[0]).text)))
    assert rows[0][:6] == [
        "step",
        "train_loss",
        "train_rewards_chosen",
        "train_rewards_rejected",
        "train_rewards_accuracy",
        "train_rewards_margin",
    ]
    assert len(rows) == 5

    # the DPO model (and its epoch-1 checkpoint) serve
    for model in (done.fine_tuned_model, ckpts[1].fine_tuned_model_checkpoint):
        reply = c.chat.completions.create(
            model=model, max_tokens=4, messages=[{"role": "user", "content": "What is 2 + 2?"}]
        )
        assert reply.choices[0].message.content is not None


def test_bad_beta_and_mismatched_or_bad_files(srv):
    c = srv.client()
    prefs = upload(c, pairs(10), "prefs.jsonl")
    with pytest.raises(openai.BadRequestError) as err:
        c.fine_tuning.jobs.create(
            model="tuneforge-tiny",
            training_file=prefs,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}},
        )
    assert err.value.body["param"] == "method.dpo.hyperparameters.beta"

    sft_file = upload(c, jsonl(10))
    bad = pairs(10).splitlines()
    bad[6] = json.dumps(
        {
            "input": {"messages": [{"role": "user", "content": "q"}]},
            "preferred_output": [{"role": "assistant", "content": "same"}],
            "non_preferred_output": [{"role": "assistant", "content": "same"}],
        }
    ).encode()
    bad_file = upload(c, b"\n".join(bad) + b"\n", "bad_prefs.jsonl")
    jobs = {
        "sft file to dpo": c.fine_tuning.jobs.create(
            model="tuneforge-tiny", training_file=sft_file, method={"type": "dpo"}
        ),
        "dpo file to sft": c.fine_tuning.jobs.create(model="tuneforge-tiny", training_file=prefs),
        "identical pair": c.fine_tuning.jobs.create(
            model="tuneforge-tiny", training_file=bad_file, method={"type": "dpo"}
        ),
    }
    done = {k: watch(c, j.id, {"succeeded", "failed", "cancelled"}) for k, j in jobs.items()}
    assert all(d.status == "failed" and d.error.code == "invalid_training_file" for d in done.values())
    assert "Line 1: this is supervised (SFT) data" in done["sft file to dpo"].error.message
    assert "method dpo" in done["dpo file to sft"].error.message
    assert "Line 7: non_preferred_output is identical" in done["identical pair"].error.message
