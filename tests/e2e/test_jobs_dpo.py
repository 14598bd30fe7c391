"""DPO jobs through a real `tuneforge serve` and the openai SDK: SFT then DPO on the SFT model (the
flow OpenAI recommends), the DPO job object, metrics, checkpoints and result file, serving the
DPO model; bad parameters and bad preference files; kill -9 of the DPO run mid-training (held at
a known step, tests/helpers.py) resumes from its saved state with the same final weights."""

from __future__ import annotations

import csv
import io
import json
import os
import signal

import openai
import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.test_jobs_training import FAST, ft_rows, job_dir, jsonl, messages_in_order, upload, watch
from tests.helpers import FINISHED, hold_env, pid_gone, release, wait_for, wait_held
from tuneforge.config import Settings
from tuneforge.store.blobs import open_blobs

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


def test_kill_9_of_the_dpo_run_resumes_from_its_state_with_the_same_weights(server_factory):
    """The training child of a DPO job dies (SIGKILL, as the OOM killer would) in its second
    epoch: the worker runs it again from the state saved after epoch 1 and the kept reference
    log-probs, and it ends with exactly the weights of a run that was never interrupted."""
    srv = server_factory(hold_env(12))  # held after step 12 of 20: past epoch 1's saved state
    c = srv.client()
    train_id = upload(c, pairs(10), "prefs.jsonl")

    def create():
        return c.fine_tuning.jobs.create(
            model="tuneforge-tiny",
            training_file=train_id,
            seed=7,
            method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 1, "beta": 0.2}}},
        )

    job = create()
    child = wait_held(
        job_dir(srv, job.id), timeout=900
    )  # validation, reference pass, 12 steps: slow when loaded
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: pid_gone(child), 30, "the DPO run to die")
    release(job_dir(srv, job.id))  # the next run goes past step 12
    done = watch(c, job.id, FINISHED)
    assert done.status == "succeeded", done.error

    log = messages_in_order(c, job.id)
    messages = [m for _, m, _ in log]
    assert any(m.startswith("The training process stopped unexpectedly (exit code -9") for m in messages)
    resumed_at = next(
        i for i, m in enumerate(messages) if m.startswith("Resuming the job from its last saved state")
    )
    # the second run replayed from the state after step 10, not from step 1
    assert [s for k, _, s in log[:resumed_at] if k == "metrics"] == list(range(1, 13))
    assert [s for k, _, s in log[resumed_at:] if k == "metrics"] == list(range(11, 21))
    assert "Resuming from step 10/20." in messages[resumed_at:]
    assert len(c.fine_tuning.jobs.checkpoints.list(job.id).data) == 2
    assert not (job_dir(srv, job.id) / "dpo_reference.pt").exists()  # removed when done

    # the same job, never interrupted
    whole = create()
    release(job_dir(srv, whole.id))
    whole = watch(c, whole.id, FINISHED)
    assert whole.status == "succeeded", whole.error
    assert whole.trained_tokens == done.trained_tokens
    rows = ft_rows(srv)
    blobs = open_blobs(Settings(data_dir=srv.data_dir).resolved())  # a model's path is its blob key
    a, b = (
        load_file(str(blobs.local_dir(rows[j.fine_tuned_model].path) / "adapter_model.safetensors"))
        for j in (done, whole)
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
