"""The worker's heartbeat tells a job its own child closed from a lease another worker took, with
real training children on both databases:

- a job that finishes normally: the child's final commit clears the lease before the worker's
  next heartbeat; the worker waits for the child to exit on its own (exit code 0) and logs no
  "lease lost" warning, even when the child is slow to exit (frozen with SIGSTOP to be sure the
  heartbeat lands in that window);
- a lease that really was taken: the worker says so and stops its child.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from sqlalchemy import update

from tuneforge.jobs.worker import Worker
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job

from .conftest import chat_lines

LOGGER = "tuneforge.jobs.worker"


def job_row(db, jid) -> Job:
    with db() as s:
        return s.get(Job, jid)


def force_heartbeat(worker: Worker) -> None:
    for child in worker.children.values():
        child.last_beat = float("-inf")


def stop_all(worker: Worker) -> None:
    for child in worker.children.values():
        child.proc.kill()
        child.proc.wait()
    worker.engine.dispose()


def test_normally_finishing_job_logs_no_lease_lost(settings, db, create, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    worker = Worker(settings)
    jid = create()
    child, froze = None, False
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            force_heartbeat(worker)  # every pass heartbeats: the race gets every chance
            worker.step()
            child = worker.children.get(jid, child)
            job = job_row(db, jid)
            if (
                job.status in ("succeeded", "failed", "cancelled")
                and not froze
                and child is not None
                and child.proc.poll() is None
            ):
                # Its job is closed and it is still exiting: hold it there across a heartbeat.
                os.kill(child.proc.pid, signal.SIGSTOP)
                froze = True
                force_heartbeat(worker)
                worker.step()
                assert child.proc.poll() is None
                os.kill(child.proc.pid, signal.SIGCONT)
            if child is not None and jid not in worker.children and child.proc.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        stop_all(worker)

    job = job_row(db, jid)
    assert job.status == "succeeded", job.error
    assert froze, "the child exited before the test could catch it between commit and exit"
    assert child.proc.returncode == 0  # it exited on its own: no SIGTERM from the worker
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert not [m for m in messages if "lease lost" in m], messages
    assert f"job {jid}: succeeded; waiting for child pid {child.proc.pid} to exit" in messages
    assert not [m for m in messages if "without finishing" in m], messages


def test_lease_taken_by_another_worker_stops_the_child(settings, db, create, upload, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    # Held after step 1 (test-only hold) until the worker kills it: it cannot finish first.
    worker = Worker(settings.model_copy(update={"test_hold_at_step": 1}))
    jid = create(
        training_file=upload(chat_lines(10)),
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 1}}},
    )
    try:
        deadline = time.monotonic() + 120
        while job_row(db, jid).status != "running" and time.monotonic() < deadline:
            worker.step()
            time.sleep(0.05)
        child = worker.children[jid]
        with transaction(db) as s:  # as if our lease had expired and another worker claimed it
            s.execute(update(Job).where(Job.id == jid).values(lease_owner="other-worker"))
        force_heartbeat(worker)
        worker.step()
        assert child.proc.wait(30) == -signal.SIGTERM
    finally:
        stop_all(worker)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert f"job {jid}: lease lost (lease taken by other-worker); stopping its child" in messages
