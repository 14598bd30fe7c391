"""A job's resumable state in the blob store (jobs/job_state.py), on a real S3 API server (moto)
and on a local directory, with two job directories standing for two machines:

- on S3 each save is published and the job's row points at it; only the newest is kept;
- a machine whose job directory lacks that state (or holds an older one) downloads it, with the
  metrics rows so far, and an empty stand-in for each servable checkpoint saved elsewhere (so
  the trainer keeps counting them); one whose own state is as new downloads nothing;
- a run that lost the job's lease publishes nothing; a job that ended loses its state;
- with a local directory nothing is copied or recorded (every worker shares the data dir).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from tuneforge.ids import now
from tuneforge.jobs import job_state
from tuneforge.store.db import transaction
from tuneforge.store.tables import FineTunedModel, Job, JobCheckpoint

pytestmark = pytest.mark.parametrize("blob_backend", ["s3", "local"])


@pytest.fixture
def job(db, create) -> str:
    job_id = create()
    with transaction(db) as s:
        row = s.get(Job, job_id)
        row.status, row.lease_owner = "running", "worker-a"
    return job_id


def save(out: Path, step: int) -> None:
    """What the trainer leaves after a save: a new state/ (renamed into place), the metrics rows."""
    tmp = out / f".state.tmp-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    (tmp / "trainable.safetensors").write_bytes(f"weights of step {step}".encode())
    (tmp / "progress.json").write_text(json.dumps({"step": step}))
    if (out / "state").exists():
        os.rename(out / "state", out / f".old-{secrets.token_hex(4)}")
    os.rename(tmp, out / "state")
    (out / "step_metrics.csv").write_text("step\n" + "".join(f"{i}\n" for i in range(1, step + 1)))


def publish(db, blobs, job: str, out: Path, step: int, owner: str = "worker-a") -> None:
    save(out, step)
    job_state.publish(blobs, db, job_id=job, owner=owner, output_dir=out, step=step)


def row(db, job: str) -> Job:
    with db() as s:
        return s.get(Job, job)


def published(blobs) -> list[str]:
    return [k for k in blobs.keys("states") if k.endswith("/manifest.json")] if blobs.remote else []


def test_state_saved_on_one_machine_resumes_on_another(db, blobs, job, tmp_path, blob_backend):
    a, b = tmp_path / "a" / job, tmp_path / "b" / job
    publish(db, blobs, job, a, 3)
    with transaction(db) as s:  # the first epoch's servable checkpoint, published at step 3
        s.add(
            JobCheckpoint(
                id="ftckpt_3",
                job_id=job,
                created_at=now(),
                step_number=3,
                fine_tuned_model_checkpoint="ft:x:ckpt-step-3",
                metrics={},
            )
        )
        s.add(
            FineTunedModel(
                id="ft:x:ckpt-step-3",
                project_id=s.get(Job, job).project_id,
                job_id=job,
                checkpoint_id="ftckpt_3",
                kind="lora",
                base_model="tuneforge-tiny",
                path="models/aa/x",
                created_at=now(),
            )
        )
    first = row(db, job).state_key
    publish(db, blobs, job, a, 6)

    if blob_backend == "local":  # one data dir for every worker: nothing copied, nothing recorded
        assert row(db, job).state_key is None and first is None
        with db() as s:
            assert not job_state.restore(s, blobs, s.get(Job, job), b)
        assert not b.exists()
        return

    assert row(db, job).state_step == 6
    assert len(published(blobs)) == 1 and not blobs.dir_exists(first)  # only the newest is kept
    with db() as s:
        assert job_state.restore(s, blobs, s.get(Job, job), b)  # machine b: downloaded
        assert not job_state.restore(s, blobs, s.get(Job, job), b)  # now as new: nothing to do
        assert not job_state.restore(s, blobs, s.get(Job, job), a)  # a wrote it: nothing to do
    assert job_state.local_step(b) == 6
    assert (b / "state" / "trainable.safetensors").read_bytes() == b"weights of step 6"
    assert (b / "step_metrics.csv").read_text() == (a / "step_metrics.csv").read_text()
    assert [p.name for p in (b / "checkpoints").iterdir()] == ["step-000003"]
    assert not [p for p in b.iterdir() if p.name.startswith(".restore-")]

    # Machine a holds an older state than the newest (b went on to step 9): it downloads.
    publish(db, blobs, job, b, 9, owner="worker-a")
    save(a, 6)
    with db() as s:
        assert job_state.restore(s, blobs, s.get(Job, job), a)
    assert job_state.local_step(a) == 9


def test_a_run_that_lost_its_job_publishes_nothing_and_an_ended_job_drops_its_state(
    db, blobs, job, tmp_path, blob_backend
):
    out = tmp_path / "a" / job
    publish(db, blobs, job, out, 3)
    before = (row(db, job).state_key, published(blobs))
    publish(db, blobs, job, out, 6, owner="worker-gone")  # its lease went to another worker
    assert (row(db, job).state_key, published(blobs)) == before
    assert row(db, job).state_step == (3 if blob_backend == "s3" else None)

    with transaction(db) as s:  # cancelled through the API while paused: no runner to clean up
        s.get(Job, job).status = "cancelled"
    assert job_state.sweep_ended(db, blobs) == (1 if blob_backend == "s3" else 0)
    assert row(db, job).state_key is None and published(blobs) == []
