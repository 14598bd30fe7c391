"""Jobs that really train tuneforge-tiny, through a real `tuneforge serve` with workers and the
openai SDK: the full flow (both databases), cancel, pause/resume, kill -9 of a worker, and two
jobs with concurrency 1 running one after the other."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from tuneforge.store.db import make_engine, make_sessionmaker
from tuneforge.store.tables import FineTunedModel

pytestmark = pytest.mark.slow

FAST = {"TUNEFORGE_WORKER_POLL_SECONDS": "0.2", "TUNEFORGE_JOB_LEASE_SECONDS": "4"}
TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))


def jsonl(n: int, offset: int = 0) -> bytes:
    rows = [json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                     {"role": "assistant", "content": f"It is {2 * i}."}]})
            for i in range(offset, offset + n)]
    return ("\n".join(rows) + "\n").encode()


def upload(client, data: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


def watch(client, job_id, until, timeout=240, seen=None):
    """Poll until the status is in `until`; collect every status observed into `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if seen is not None:
            seen.append(job.status)
        if job.status in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")


def wait_metrics(client, job_id, at_least=1, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.fine_tuning.jobs.list_events(job_id, limit=1)
        if page.data and page.data[0].type == "metrics" and page.data[0].data["step"] >= at_least:
            return page.data[0]
        time.sleep(0.1)
    raise AssertionError("no metrics events")


def ft_rows(server, db_url=None):
    engine = make_engine(db_url or f"sqlite:///{server.data_dir / 'tuneforge.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            return {r.id: r for r in s.scalars(select(FineTunedModel))}
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_full_flow(server_factory, request, database):
    env = dict(FAST)
    db_url = None
    if database == "postgres":
        db_url = request.getfixturevalue("pg_url")
        env["TUNEFORGE_DATABASE_URL"] = db_url
    srv = server_factory(env)
    c = srv.client()
    train_id, valid_id = upload(c, jsonl(10)), upload(c, jsonl(10, offset=20), "valid.jsonl")
    job = c.fine_tuning.jobs.create(
        model="tuneforge-tiny", training_file=train_id, validation_file=valid_id, suffix="e2e",
        seed=11, method={"type": "supervised",
                         "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 5}}})
    seen = [job.status]
    done = watch(c, job.id, {"succeeded", "failed", "cancelled"}, seen=seen)
    assert done.status == "succeeded", done.error
    assert seen[0] == "validating_files" and "running" in seen
    order = ["validating_files", "queued", "running", "succeeded"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)

    # the job object
    total_steps = 3 * 2
    assert done.fine_tuned_model == f"ft:tuneforge-tiny:default:e2e:{done.fine_tuned_model[-8:]}"
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at
    assert done.estimated_finish is None and done.error is None
    assert (done.hyperparameters.n_epochs, done.hyperparameters.batch_size) == (3, 5)
    assert isinstance(done.hyperparameters.learning_rate_multiplier, float)

    # events: newest first, auto-paginated, OpenAI's sequence
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=5))
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    chrono = events[::-1]
    messages = [e.message for e in chrono if e.type == "message"]
    assert messages[:4] == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {train_id} and validation file: {valid_id}",
        "Files validated, moving job to queued state", "Fine-tuning job started"]
    assert messages[-2:] == [f"New fine-tuned model created: {done.fine_tuned_model}",
                             "The job has successfully completed"]
    started = next(e for e in chrono if e.message == "Fine-tuning job started")
    assert started.data is None
    metrics = [e for e in chrono if e.type == "metrics"]
    assert [m.data["step"] for m in metrics] == list(range(1, total_steps + 1))
    assert all(m.data["total_steps"] == total_steps for m in metrics)
    assert metrics[0].message.startswith(f"Step 1/{total_steps}: training loss=")
    assert "full_valid_loss" in metrics[-1].data and "full validation loss=" in metrics[-1].message
    ckpt_events = [m for m in messages if m.startswith("Checkpoint created at step")]
    assert len(ckpt_events) == 2

    # checkpoints: one per epoch, newest first; the last is the model itself
    ckpts = c.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [k.step_number for k in ckpts] == [6, 4, 2]
    assert ckpts[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    prefix = "ft:tuneforge-tiny:default:e2e:"
    for k in ckpts[1:]:
        name = k.fine_tuned_model_checkpoint
        assert name.startswith(prefix) and name.endswith(f":ckpt-step-{k.step_number}")
        assert name.split(":")[4] != done.fine_tuned_model[-8:]
        assert k.id.startswith("ftckpt_") and k.metrics.train_loss is not None
        assert f"Checkpoint created at step {k.step_number} with Snapshot ID: {name}" in messages

    # result file
    assert len(done.result_files) == 1
    meta = c.files.retrieve(done.result_files[0])
    assert (meta.filename, meta.purpose) == ("step_metrics.csv", "fine-tune-results")
    assert done.result_files[0] in [f.id for f in c.files.list(purpose="fine-tune-results")]
    rows = list(csv.reader(io.StringIO(c.files.content(done.result_files[0]).text)))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss",
                       "valid_mean_token_accuracy"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, total_steps + 1))

    # servable models registered: the final one and each kept checkpoint
    models = ft_rows(srv, db_url)
    names = {k.fine_tuned_model_checkpoint for k in ckpts}
    assert names <= set(models)
    final = models[done.fine_tuned_model]
    assert final.kind == "lora" and (Path(final.path) / "adapter_config.json").is_file()
    assert Path(final.path).name == "final"


@pytest.fixture(scope="module")
def slow_srv(server_factory):
    return server_factory(FAST)


def long_job(c, epochs=40):
    return c.fine_tuning.jobs.create(
        model="tuneforge-tiny", training_file=upload(c, jsonl(10)),
        method={"type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": 1}}})


def test_cancel_running_job_stops_within_seconds(slow_srv):
    c = slow_srv.client()
    job = long_job(c)
    wait_metrics(c, job.id)
    c.fine_tuning.jobs.cancel(job.id)
    t0 = time.monotonic()
    done = watch(c, job.id, {"cancelled", "succeeded", "failed"}, timeout=30)
    assert done.status == "cancelled" and time.monotonic() - t0 < 10
    assert done.fine_tuned_model is None and done.finished_at is not None
    newest = c.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert (newest.level, newest.message) == ("warn", "Fine-tuning job was cancelled")


def test_pause_then_resume_continues_from_saved_state(slow_srv):
    c = slow_srv.client()
    from openai import OpenAI

    loose = OpenAI(base_url=slow_srv.base_url, api_key=c.api_key, max_retries=0)  # reads `paused`
    job = long_job(c, epochs=10)   # long enough that training cannot finish before the pause lands
    first = wait_metrics(c, job.id, at_least=2)
    c.fine_tuning.jobs.pause(job.id)
    paused = watch(loose, job.id, {"paused", "succeeded", "failed"}, timeout=60)
    assert paused.status == "paused"
    steps_before = c.fine_tuning.jobs.list_events(job.id, limit=1)   # nothing trains while paused
    time.sleep(1.5)
    assert c.fine_tuning.jobs.list_events(job.id, limit=1).data[0].id == steps_before.data[0].id
    resumed = loose.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = watch(c, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    steps = [e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id, limit=1000)
             if e.type == "metrics"][::-1]
    # the resumed run continued after the paused step, it did not start over
    assert steps[-1] == 100 and steps.count(1) == 1 and first.data["step"] >= 2


def test_two_jobs_with_concurrency_1_run_one_after_the_other(slow_srv):
    c = slow_srv.client()
    ids = [long_job(c, epochs=2).id for _ in range(2)]
    overlap = False
    statuses = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        statuses = {i: c.fine_tuning.jobs.retrieve(i).status for i in ids}
        overlap |= list(statuses.values()).count("running") > 1
        if all(s in ("succeeded", "failed", "cancelled") for s in statuses.values()):
            break
        time.sleep(0.1)
    assert not overlap and set(statuses.values()) == {"succeeded"}, statuses
    # (jobs created in the same second may start in either order)
    jobs = sorted((c.fine_tuning.jobs.retrieve(i) for i in ids), key=lambda j: j.finished_at)
    started_second = [e for e in c.fine_tuning.jobs.list_events(jobs[1].id, limit=100)
                      if e.message == "Fine-tuning job started"][0]
    assert started_second.created_at >= jobs[0].finished_at


def test_kill_9_of_the_worker_then_restart_finishes_the_job(server_factory):
    srv = server_factory({**FAST, "TUNEFORGE_WORKERS": "0"})
    c = srv.client()
    worker = subprocess.Popen([TUNEFORGE, "worker"], env=srv.env)
    try:
        job = long_job(c, epochs=6)
        wait_metrics(c, job.id, at_least=12)      # past the first epoch's saved state
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        time.sleep(1)
        frozen = c.fine_tuning.jobs.list_events(job.id, limit=1).data[0].id
        time.sleep(1.5)   # the training child died with its worker: nothing moves
        assert c.fine_tuning.jobs.list_events(job.id, limit=1).data[0].id == frozen
        assert c.fine_tuning.jobs.retrieve(job.id).status == "running"
        worker = subprocess.Popen([TUNEFORGE, "worker"], env=srv.env)
        done = watch(c, job.id, {"succeeded", "failed", "cancelled"})
        assert done.status == "succeeded", done.error
        messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=1000)]
        assert any(m.startswith("Resuming the job from its last saved state") for m in messages)
        assert len(c.fine_tuning.jobs.checkpoints.list(job.id).data) == 3
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
