"""Training on a real Ray cluster (TUNEFORGE_EXECUTOR=ray), driven through `tuneforge serve` with
the openai SDK.

One `ray start --head` on 127.0.0.1 (2 CPUs, random ports, its own temp dir) and one server for
the module. Jobs on `tuneforge-tiny` run on 1 Ray Train worker, jobs on `tiny-dp` (the same model
under another base name, with a TUNEFORGE_RAY_RESOURCES override) on 2 data-parallel workers
(gloo); each worker asks for 0.5 CPU so two jobs fit the cluster at once.

- 2 workers train what 1 worker does on the same global batch: the same per-step losses and
  final adapter weights, in fp32, within float-summation tolerance (the ranks' partial sums are
  added in another order: rtol 1e-4 on losses; atol 1e-4 on weights, where Adam amplifies that
  noise on near-zero gradients; tests/training/test_parallel.py checks the gradient itself);
- a job whose rank-0 Ray worker process is killed (SIGKILL, held mid-run by the test-only hold)
  resumes from its last saved state and, after a pause and a resume on top, ends with exactly the
  weights of an uninterrupted 2-worker run (torch.equal);
- cancel and pause reach the Ray workers within seconds;
- a full fine-tune (`tiny-full`, `tiny-fsdp`: TUNEFORGE_FULL_FINE_TUNE_MODELS) on 2 workers is
  sharded (FSDP) and trains what 1 worker does: same losses, same whole-model weights.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import hold_env, jsonl, metric_steps, release, upload, wait_held, watch
from tests.ray_cluster import RayHead

pytestmark = pytest.mark.slow

HOLD = 4  # 12 examples, batch 4, 2 epochs: 6 steps, state saved at step 3 (epoch end)
HP = {"n_epochs": 2, "batch_size": 4}
STOP_SECONDS = 30  # "within seconds", with room for a loaded 2-core machine


@pytest.fixture(scope="module")
def ray_head():
    with RayHead(num_cpus=2) as head:
        yield head


@pytest.fixture(scope="module")
def server(server_factory, ray_head, tmp_path_factory):
    from tuneforge.training.tiny import ensure_tiny_model

    tiny = ensure_tiny_model(tmp_path_factory.mktemp("models"))
    return server_factory(
        {
            **hold_env(HOLD),
            "TUNEFORGE_WORKERS": "1",
            "TUNEFORGE_WORKER_CONCURRENCY": "2",
            "TUNEFORGE_EXECUTOR": "ray",
            "TUNEFORGE_RAY_ADDRESS": ray_head.address,
            "TUNEFORGE_RAY_CPUS_PER_WORKER": "0.5",
            "TUNEFORGE_BASE_MODELS": json.dumps(
                {n: str(tiny) for n in ("tiny-dp", "tiny-full", "tiny-fsdp")}
            ),
            "TUNEFORGE_RAY_RESOURCES": json.dumps({"tiny-dp": {"workers": 2}, "tiny-fsdp": {"workers": 2}}),
            "TUNEFORGE_FULL_FINE_TUNE_MODELS": json.dumps(["tiny-full", "tiny-fsdp"]),
            # fp32 (passed on to the Ray workers): in bf16 each rank's smaller packed rows round
            # differently, as any change of micro-batch shape does.
            "TUNEFORGE_BF16": "0",
        }
    )


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    # The SDK's default (not strict) validation: it reads a `paused` job (README, Jobs).
    return OpenAI(base_url=server.base_url, api_key=server.client().api_key, max_retries=0)


@pytest.fixture(scope="module")
def files(client) -> tuple[str, str]:
    return upload(client, jsonl(12)), upload(client, jsonl(10, offset=100), "valid.jsonl")


def create(client, files, model: str, hp: dict | None = None) -> str:
    return client.fine_tuning.jobs.create(
        model=model,
        training_file=files[0],
        validation_file=files[1],
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": hp or HP}},
    ).id


def job_dir(server, job_id: str) -> Path:
    return server.data_dir / "jobs" / job_id


def final_weights(server, job_id: str) -> dict[str, torch.Tensor]:
    return load_file(str(job_dir(server, job_id) / "final" / "adapter_model.safetensors"))


def losses(client, job_id: str) -> list[tuple[int, float, float | None]]:
    """(step, train_loss, valid_loss) of every metrics event, oldest first."""
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data[::-1]
    return [
        (e.data["step"], e.data["train_loss"], e.data.get("valid_loss"))
        for e in events
        if e.type == "metrics"
    ]


def messages(client, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=1000).data[::-1]]


@pytest.fixture(scope="module")
def uninterrupted(server, client, files) -> dict[int, str]:
    """workers -> the id of a finished, never interrupted job (both run at once)."""
    jobs = {1: create(client, files, "tuneforge-tiny"), 2: create(client, files, "tiny-dp")}
    for jid in jobs.values():
        release(job_dir(server, jid))  # these run through the module's hold
    for jid in jobs.values():
        job = watch(client, jid, {"succeeded", "failed", "cancelled"}, timeout=600)
        assert job.status == "succeeded", job.error
    return jobs


def test_two_ray_workers_train_what_one_does(server, client, uninterrupted):
    one, two = uninterrupted[1], uninterrupted[2]
    assert any(
        m.startswith("Training on the Ray cluster: 1 data-parallel worker(s)") for m in messages(client, one)
    )
    assert "Training on the Ray cluster: 2 data-parallel worker(s), each with 0.5 CPU" in messages(
        client, two
    )

    a, b = losses(client, one), losses(client, two)
    assert [s for s, *_ in a] == [s for s, *_ in b] == list(range(1, 7))
    for (step, train_a, valid_a), (_, train_b, valid_b) in zip(a, b):
        assert train_b == pytest.approx(train_a, rel=1e-4), step
        assert (valid_a is None) == (valid_b is None), step
        if valid_a is not None:  # validation is dealt out between the ranks too
            assert valid_b == pytest.approx(valid_a, rel=1e-4), step
    assert a[-1][1] < a[0][1]  # it trained

    wa, wb = final_weights(server, one), final_weights(server, two)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-4, msg=name)
    ja, jb = client.fine_tuning.jobs.retrieve(one), client.fine_tuning.jobs.retrieve(two)
    assert ja.trained_tokens == jb.trained_tokens > 0
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(two).data] == [6, 3]
    # Only rank 0 wrote: one metrics event per step, one result file.
    assert len(jb.result_files) == 1


def test_killed_ray_worker_pause_resume_and_cancel(server, client, files, uninterrupted):
    job = create(client, files, "tiny-dp")  # 2 Ray workers
    other = create(client, files, "tuneforge-tiny")  # 1 Ray worker, beside it: cancelled
    rank0 = wait_held(job_dir(server, job), timeout=600)
    wait_held(job_dir(server, other), timeout=600)

    t0 = time.monotonic()
    client.fine_tuning.jobs.cancel(other)
    assert watch(client, other, {"cancelled", "failed", "succeeded"}).status == "cancelled"
    assert time.monotonic() - t0 < STOP_SECONDS

    # The Ray worker process of rank 0 (it wrote the hold file) dies as an OOM kill would.
    (job_dir(server, job) / "holding").unlink()
    os.kill(rank0, signal.SIGKILL)
    rank0_again = wait_held(job_dir(server, job), timeout=600)  # resumed, held at the same step
    assert rank0_again != rank0
    assert client.fine_tuning.jobs.retrieve(job).status == "running"
    said = messages(client, job)
    assert any(m.startswith("A Ray training worker (rank 0) stopped unexpectedly") for m in said), said
    assert not any(m.startswith("The training process stopped unexpectedly") for m in said)  # said once
    assert "Resuming from step 3/6." in said

    t0 = time.monotonic()
    client.fine_tuning.jobs.pause(job)
    assert watch(client, job, {"paused", "failed", "succeeded", "cancelled"}).status == "paused"
    assert time.monotonic() - t0 < STOP_SECONDS
    client.fine_tuning.jobs.resume(job)
    finished = watch(client, job, {"succeeded", "failed", "cancelled"}, timeout=600)
    assert finished.status == "succeeded", finished.error
    assert "Resuming from step 4/6." in messages(client, job)

    # Step 4 ran twice (before the kill, and again from the state saved at step 3) with the same
    # result; the pause saved step 4 and the last run went on from step 5.
    steps = losses(client, job)
    assert [s for s, *_ in steps] == [1, 2, 3, 4, 4, 5, 6]
    assert steps[3] == steps[4]
    # Identical continuation: the weights of the uninterrupted 2-worker run, bit for bit.
    ref = final_weights(server, uninterrupted[2])
    got = final_weights(server, job)
    assert ref.keys() == got.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert metric_steps(client, job)[-1] == 6


def test_a_full_fine_tune_on_two_ray_workers_is_sharded_and_trains_what_one_does(server, client, files):
    hp = {**HP, "learning_rate_multiplier": 50}  # 1e-3: the weights move well beyond the tolerance
    jobs = {1: create(client, files, "tiny-full", hp), 2: create(client, files, "tiny-fsdp", hp)}
    for jid in jobs.values():
        release(job_dir(server, jid))
    for jid in jobs.values():
        job = watch(client, jid, {"succeeded", "failed", "cancelled"}, timeout=600)
        assert job.status == "succeeded", job.error
    assert not any("Sharded (FSDP)" in m for m in messages(client, jobs[1]))
    assert any("Sharded (FSDP) over 2 ranks" in m for m in messages(client, jobs[2]))
    one, two = losses(client, jobs[1]), losses(client, jobs[2])
    assert [s for s, _, _ in one] == [s for s, _, _ in two] == [1, 2, 3, 4, 5, 6]
    for (_, a, _), (_, b, _) in zip(one, two, strict=True):
        assert b == pytest.approx(a, rel=1e-4)
    w1, w2 = (load_file(str(job_dir(server, j) / "final" / "model.safetensors")) for j in jobs.values())
    assert w1.keys() == w2.keys() and len(w1) > 10  # every weight of the model, not an adapter
    base = load_file(
        str(Path(json.loads(server.env["TUNEFORGE_BASE_MODELS"])["tiny-full"]) / "model.safetensors")
    )
    assert max((w1[k] - base[k]).abs().max().item() for k in base if k in w1) > 1e-3  # it trained
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-4, rtol=0)
