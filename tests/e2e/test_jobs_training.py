"""Jobs that really train tuneforge-tiny, through a real `tuneforge serve` with workers and the
openai SDK: the full flow (both databases), cancel, pause/resume, kill -9 of a worker, and two
jobs with concurrency 1 running one after the other.

Cancel, pause and kill -9 act on a job held at a known step (tests/helpers.py: the test-only
hold), never on a job sized to outlast the test on a fast CPU.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.helpers import (
    FAST,
    FINISHED,
    hold_env,
    jsonl,
    metric_steps,
    pid_gone,
    release,
    upload,
    wait_for,
    wait_held,
    watch,
)
from tuneforge.config import Settings
from tuneforge.domain import events as ev
from tuneforge.store.blobs import open_blobs
from tuneforge.store.db import make_engine, make_sessionmaker
from tuneforge.store.tables import FineTunedModel

pytestmark = pytest.mark.slow

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))


def ft_rows(server, db_url=None):
    engine = make_engine(db_url or f"sqlite:///{server.data_dir / 'tuneforge.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            return {r.id: r for r in s.scalars(select(FineTunedModel))}
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("database", "blobs"), [("sqlite", "local"), ("postgres", "local"), ("sqlite", "s3")]
)
def test_full_flow(server_factory, request, database, blobs):
    env = dict(FAST)
    db_url = None
    if database == "postgres":
        db_url = request.getfixturevalue("pg_url")
        env["TUNEFORGE_DATABASE_URL"] = db_url
    blob_url = request.getfixturevalue("s3_blob_url") if blobs == "s3" else None
    if blob_url:  # files, result files, checkpoints and models in a real S3 API server (moto)
        env["TUNEFORGE_BLOB_URL"] = blob_url
    srv = server_factory(env)
    c = srv.client()
    train_id, valid_id = upload(c, jsonl(10)), upload(c, jsonl(10, offset=20), "valid.jsonl")
    job = c.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=train_id,
        validation_file=valid_id,
        suffix="e2e",
        seed=11,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 5}}},
    )
    seen = [job.status]
    done = watch(c, job.id, {"succeeded", "failed", "cancelled"}, timeout=900, seen=seen)
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
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    assert messages[-2:] == [
        f"New fine-tuned model created: {done.fine_tuned_model}",
        "The job has successfully completed",
    ]
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
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, total_steps + 1))

    # servable models registered: the final one and each kept checkpoint
    models = ft_rows(srv, db_url)
    names = {k.fine_tuned_model_checkpoint for k in ckpts}
    assert names <= set(models)
    final = models[done.fine_tuned_model]
    assert final.kind == "lora" and final.path.startswith("models/")  # a published model directory
    store = open_blobs(Settings(data_dir=srv.data_dir, blob_url=blob_url).resolved())
    assert store.dir_exists(final.path) and all(store.dir_exists(models[n].path) for n in names)
    if blob_url:  # the bytes live in the bucket, not on the server's disk
        assert not (srv.data_dir / "blobs" / "models").exists()
        assert not (srv.data_dir / "blobs" / "files").exists()

    # served: the final model and an earlier checkpoint answer (loaded from the store; on S3 from
    # the serving process's local cache, downloaded once)
    for name in (done.fine_tuned_model, ckpts[1].fine_tuned_model_checkpoint):
        r = c.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "What is 1 + 1?"}], max_tokens=4
        )
        assert r.model == name and r.choices[0].message.content is not None
    if blob_url:
        assert (srv.data_dir / "cache" / final.path / "adapter_config.json").is_file()


@pytest.fixture(scope="module")
def slow_srv(server_factory):
    return server_factory(FAST)


@pytest.fixture(scope="module")
def held_srv(server_factory):
    """Every job's trainer waits after step 2 until it is cancelled or paused."""
    return server_factory(hold_env(2))


def long_job(c, epochs=40):
    return c.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=upload(c, jsonl(10)),
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": 1}},
        },
    )


def job_dir(srv, job_id) -> Path:
    return srv.data_dir / "jobs" / job_id


def messages_in_order(c, job_id):
    """(type, message, step or None) of every event, oldest first."""
    return [
        (e.type, e.message, (e.data or {}).get("step"))
        for e in c.fine_tuning.jobs.list_events(job_id, limit=10_000)
    ][::-1]


def test_cancel_running_job_stops_within_seconds(held_srv):
    c = held_srv.client()
    job = long_job(c, epochs=3)
    wait_held(job_dir(held_srv, job.id))  # mid-run, at step 2 of 30
    c.fine_tuning.jobs.cancel(job.id)
    done = watch(c, job.id, FINISHED, timeout=10)
    assert done.status == "cancelled"
    assert done.fine_tuned_model is None and done.finished_at is not None
    newest = c.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert (newest.level, newest.message) == ("warn", "Fine-tuning job was cancelled")
    assert metric_steps(c, job.id) == [1, 2]


def test_pause_then_resume_continues_from_saved_state(held_srv):
    c = held_srv.client()
    from openai import OpenAI

    loose = OpenAI(base_url=held_srv.base_url, api_key=c.api_key, max_retries=0)  # reads `paused`
    job = long_job(c, epochs=1)  # 10 steps; held after step 2
    wait_held(job_dir(held_srv, job.id))
    c.fine_tuning.jobs.pause(job.id)
    paused = watch(loose, job.id, {"paused", *FINISHED}, timeout=60)
    assert paused.status == "paused"
    resumed = loose.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = watch(c, job.id, FINISHED)
    assert done.status == "succeeded", done.error
    # the resumed run continued after the paused step: every step exactly once
    assert metric_steps(c, job.id) == list(range(1, 11))
    # and nothing trained while the job was paused: no metrics between pause and resume
    log = messages_in_order(c, job.id)
    kinds = [m for _, m, _ in log]
    between = log[kinds.index(ev.PAUSED) : kinds.index(ev.RESUMED)]
    assert [step for kind, _, step in between if kind == "metrics"] == []


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
    started_second = [
        e
        for e in c.fine_tuning.jobs.list_events(jobs[1].id, limit=100)
        if e.message == "Fine-tuning job started"
    ][0]
    assert started_second.created_at >= jobs[0].finished_at


def test_kill_9_of_the_worker_then_restart_finishes_the_job(server_factory):
    # Held after step 12: past the first epoch's saved state (10 examples, batch 1).
    srv = server_factory({**hold_env(12), "TUNEFORGE_WORKERS": "0"})
    c = srv.client()
    worker = subprocess.Popen([TUNEFORGE, "worker"], env=srv.env)
    try:
        job = long_job(c, epochs=2)  # 20 steps, a saved state after step 10
        child = wait_held(job_dir(srv, job.id))
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        # the training child dies with its worker (PR_SET_PDEATHSIG)
        wait_for(lambda: pid_gone(child), 30, "the training child to die with its worker")
        assert c.fine_tuning.jobs.retrieve(job.id).status == "running"
        release(job_dir(srv, job.id))  # the next run goes past step 12
        worker = subprocess.Popen([TUNEFORGE, "worker"], env=srv.env)
        done = watch(c, job.id, FINISHED)
        assert done.status == "succeeded", done.error
        log = messages_in_order(c, job.id)
        resumed_at = next(
            i for i, (_, m, _) in enumerate(log) if m.startswith("Resuming the job from its last saved state")
        )
        # nothing moved between the kill and the new worker; the new run replayed from step 10
        assert [s for k, _, s in log[:resumed_at] if k == "metrics"] == list(range(1, 13))
        assert [s for k, _, s in log[resumed_at:] if k == "metrics"] == list(range(11, 21))
        assert len(c.fine_tuning.jobs.checkpoints.list(job.id).data) == 2
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
