"""Recovery paths of the worker, with real worker and runner processes on both databases:

- a job whose training child keeps dying (SIGKILL, as the OOM killer would) fails after
  `job_max_attempts` runs with a clear error and the matching error event, never left `running`;
- SIGTERM to a worker mid-training saves the job's state and puts it back in the queue, and a new
  worker resumes it from the saved step, not from step 1;
- with the bytes in S3, a job whose worker's machine died (kill -9) resumes from its saved state
  on a worker with another data dir (another machine), which downloads that state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from tests.helpers import FAST, hold_env, wait_for, wait_held
from tuneforge.domain import events as ev
from tuneforge.jobs.worker import Worker
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job, JobEvent

from .conftest import chat_lines


def job_row(db, jid) -> Job:
    with db() as s:
        return s.get(Job, jid)


def events(db, jid) -> list[JobEvent]:
    with db() as s:
        return list(s.scalars(select(JobEvent).where(JobEvent.job_id == jid).order_by(JobEvent.seq)))


def test_child_that_keeps_dying_fails_the_job_after_max_attempts(settings, db, create):
    # Each run is held after step 1 (test-only hold), so it is always mid-run when killed.
    w = Worker(settings.model_copy(update={"job_max_attempts": 2, "test_hold_at_step": 1}))
    jid = create()
    statuses: list[str] = []
    kills = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            w.step()
            job = job_row(db, jid)
            statuses.append(job.status)
            if job.status == "failed":
                break
            child = w.children.get(jid)
            # Kill each run once it really owns the job (status running), as the OOM killer would.
            if child is not None and job.status == "running" and child.proc.poll() is None:
                os.kill(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
                kills += 1
            time.sleep(0.1)
    finally:
        for child in w.children.values():
            child.proc.kill()
            child.proc.wait()
        w.engine.dispose()

    assert kills == 2, statuses
    job = job_row(db, jid)
    assert job.status == "failed" and job.finished_at is not None
    assert (job.lease_owner, job.requested_action, job.estimated_finish) == (None, None, None)
    message = "The job failed after 2 attempts: the process running it stopped unexpectedly each time."
    assert job.error == {"code": "training_failed", "message": message, "param": None}
    evs = events(db, jid)
    assert (evs[-1].level, evs[-1].message) == ("error", message)
    stopped = [e for e in evs if e.message.startswith("The training process stopped unexpectedly")]
    assert len(stopped) == 2 and all("exit code -9" in e.message for e in stopped)
    assert statuses[-1] == "failed"
    # A failed job stays failed: another pass of a worker does not revive it.
    w2 = Worker(settings)
    try:
        w2.step()
        assert not w2.children
    finally:
        w2.engine.dispose()
    assert job_row(db, jid).status == "failed"


def worker_proc(settings, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "TUNEFORGE_DATA_DIR": str(settings.data_dir),
        "TUNEFORGE_DATABASE_URL": str(settings.database_url),
        **FAST,
        **(env or {}),
    }
    return subprocess.Popen([sys.executable, "-m", "tuneforge.jobs.worker"], env=env)


def metric_steps(db, jid) -> list[int]:
    return [e.data["step"] for e in events(db, jid) if e.type == "metrics"]


@pytest.mark.slow
def test_sigterm_requeues_with_saved_state_and_a_new_worker_resumes(settings, db, create, upload):
    # 10 examples, batch 1, 2 epochs: 20 steps; the trainer is held after step 2 (the test-only
    # hold) until the worker's shutdown asks it to stop, so SIGTERM always lands mid-run.
    jid = create(
        training_file=upload(chat_lines(10)),
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 1}}},
    )
    worker = worker_proc(settings, hold_env(2))
    try:
        wait_held(settings.jobs_dir / jid)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        job = job_row(db, jid)
        assert (job.status, job.lease_owner, job.requested_action) == ("queued", None, None)
        assert job.estimated_finish is None
        done_before = metric_steps(db, jid)
        saved = done_before[-1]
        assert done_before == [1, 2] and saved == 2
        evs = events(db, jid)
        assert evs[-1].message == ("The worker stopped; the job saved its state and is back in the queue")
        progress = (settings.jobs_dir / jid / "state").is_dir()
        assert progress, "SIGTERM did not save the job's state"

        worker = worker_proc(settings, hold_env(2))  # resumes at step 3: past the hold
        wait_for(
            lambda: job_row(db, jid).status in ("succeeded", "failed", "cancelled"),
            240,
            "the resumed job to finish",
        )
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    job = job_row(db, jid)
    assert job.status == "succeeded", job.error
    steps = metric_steps(db, jid)
    # the second run picked up right after the saved step: every step exactly once, and none
    # while no worker ran (between the requeue and the next run)
    assert steps == list(range(1, 21)), steps
    evs = events(db, jid)
    messages = [e.message for e in evs]
    requeued = messages.index(ev.REQUEUED)
    continued = messages.index(ev.CONTINUED)
    assert [e for e in evs[requeued:continued] if e.type == "metrics"] == []
    assert f"Resuming from step {saved}/20." in messages
    assert messages.count("Fine-tuning job started") == 1


def test_worker_stopping_before_a_recovered_run_starts_requeues_it(settings, db, create):
    """A worker claims a job whose last run died (status running), and is told to stop (SIGTERM
    sets requested_action=requeue) before its child's first transaction: the child must put the
    job back in the queue at once, not drop the request and train until it is killed."""
    from tuneforge.jobs import queue
    from tuneforge.jobs.runner import run_job

    w = Worker(settings)
    jid = create()
    try:
        deadline = time.monotonic() + 60
        while job_row(db, jid).status != "running" and time.monotonic() < deadline:
            w.step()
            time.sleep(0.1)
        child = w.children[jid]
        os.kill(child.proc.pid, signal.SIGKILL)  # the first run dies
        child.proc.wait()
        w.step()  # reaped: running, lease given back
    finally:
        for c in w.children.values():
            c.proc.kill()
            c.proc.wait()
        w.engine.dispose()
    job = job_row(db, jid)
    assert (job.status, job.lease_owner) == ("running", None)

    claim = queue.claim(db, "stopping-worker", stage="train", lease_seconds=30, job_id=jid)
    assert claim is not None and claim.recovered
    with transaction(db) as s:  # what Worker.shutdown writes
        s.get(Job, jid).requested_action = "requeue"
    t0 = time.monotonic()
    assert run_job(settings, jid, "stopping-worker") == 0
    job = job_row(db, jid)
    assert (job.status, job.lease_owner, job.requested_action) == ("queued", None, None)
    assert time.monotonic() - t0 < 10
    assert metric_steps(db, jid) == []
    assert events(db, jid)[-1].message == (
        "The worker stopped; the job saved its state and is back in the queue"
    )


@pytest.mark.slow
@pytest.mark.parametrize("blob_backend", ["s3"])
def test_a_worker_on_another_machine_resumes_from_the_state_in_the_bucket(
    settings, db, create, upload, tmp_path, blob_backend
):
    # 10 examples, batch 5, 2 epochs: 4 steps, the state of step 2 published at the first
    # epoch's end; held after step 3, when machine a dies.
    jid = create(
        training_file=upload(chat_lines(10)),
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 5}}},
    )
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    machine = {"TUNEFORGE_BLOB_URL": str(settings.blob_url), **hold_env(3)}
    worker = worker_proc(settings, {**machine, "TUNEFORGE_DATA_DIR": str(a)})
    try:
        wait_held(a / "jobs" / jid)
        assert job_row(db, jid).state_step == 2
        worker.kill()
        worker.wait()
        (b / "jobs" / jid).mkdir(parents=True)
        (b / "jobs" / jid / "release-hold").touch()  # machine b's run goes past the hold
        worker = worker_proc(settings, {**machine, "TUNEFORGE_DATA_DIR": str(b)})
        wait_for(
            lambda: job_row(db, jid).status in ("succeeded", "failed", "cancelled"), 240, "the job to finish"
        )
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    job = job_row(db, jid)
    assert job.status == "succeeded", job.error
    assert "Resuming from step 2/4." in [e.message for e in events(db, jid)]
    assert metric_steps(db, jid) == [1, 2, 3, 3, 4]
    assert (job.state_key, job.state_step) == (None, None)  # over: its state left the bucket
