"""The test-only hold (Settings.test_hold_at_step) that the pause/cancel/kill tests rely on: the
reporter waits after the step until the job is asked to stop or released, then the trainer's next
`stop_requested` sees the request at once."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import update

from tests.helpers import release, wait_held
from tuneforge.domain.states import Status
from tuneforge.jobs.reporter import DbReporter
from tuneforge.store.blobs import LocalBlobStore
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job
from tuneforge.training.spec import StopRequest


@pytest.fixture
def running(db, create):
    jid = create()
    with transaction(db) as s:
        s.execute(update(Job).where(Job.id == jid).values(status=Status.RUNNING.value, lease_owner="me"))
    return jid


def reporter(db, jid, job_dir, hold_at_step=2) -> DbReporter:
    return DbReporter(
        db,
        job_id=jid,
        owner="me",
        project_id="p",
        project_name="Acme",
        model="tuneforge-tiny",
        suffix=None,
        fallback_base="tuneforge-tiny",
        blobs=LocalBlobStore(job_dir / "blobs"),
        hold_at_step=hold_at_step,
        job_dir=job_dir,
    )


def step(r: DbReporter, n: int) -> None:
    r.metrics({"step": n, "total_steps": 10, "train_loss": 1.0})


def in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize(
    "action, answer",
    [("pause", StopRequest.PAUSE), ("cancel", StopRequest.CANCEL), ("requeue", StopRequest.PAUSE)],
)
def test_held_until_asked_to_stop_then_the_request_is_seen_at_once(db, running, tmp_path, action, answer):
    r = reporter(db, running, tmp_path / "job")
    assert r.stop_requested() is None  # polled: the next poll would be cached for 1 s
    step(r, 1)  # not the hold step: returns
    trainer = in_thread(lambda: step(r, 2))
    assert wait_held(tmp_path / "job", 30) == os.getpid()
    assert trainer.is_alive()  # waiting, whatever the time it is given
    with transaction(db) as s:
        s.get(Job, running).requested_action = action
    trainer.join(30)
    assert not trainer.is_alive()
    assert r.stop_requested() is answer  # not the cached "no request"


def test_released_by_the_file_and_only_at_its_step(db, running, tmp_path):
    r = reporter(db, running, tmp_path / "job")
    trainer = in_thread(lambda: step(r, 2))
    wait_held(tmp_path / "job", 30)
    release(tmp_path / "job")
    trainer.join(30)
    assert not trainer.is_alive()
    t0 = time.monotonic()
    step(r, 3)
    step(reporter(db, running, tmp_path / "job"), 2)  # released: a later run passes too
    assert time.monotonic() - t0 < 5
