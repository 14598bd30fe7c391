"""Ray and S3 together, as on machines that share no disk: one PostgreSQL, one bucket on a real S3
API server (moto), a real Ray head on 127.0.0.1, and `tuneforge worker`s with data dirs of their
own (one per "machine"), beside a `tuneforge serve` with another.

- A job trains on the Ray executor with its bytes in S3. Its worker's machine dies mid-run (kill -9
  of the worker: its runner, the Ray driver, and so the Ray run go with it), after the state of
  step 3 was published to the bucket. A worker on another machine resumes it from that state,
  downloaded from the bucket (its own data dir has nothing), and it succeeds: the metrics rows
  from before the resume are in the result file, the model is served by the API process (a third
  data dir), and no saved state is left in the bucket.
- A job whose Ray worker dies on every run fails with a clear error after the attempt limit
  (TUNEFORGE_JOB_MAX_ATTEMPTS), never left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import TUNEFORGE
from tests.helpers import FINISHED, hold_env, jsonl, metric_steps, release, upload, wait_for, wait_held, watch
from tests.ray_cluster import RayHead

pytestmark = pytest.mark.slow

HOLD = 4  # 12 examples, batch 4, 2 epochs: 6 steps, the state of step 3 published at epoch end
HP = {"n_epochs": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def ray_head(s3_server):
    # After s3_server: Ray's workers inherit the head's environment, the AWS_* settings included
    # (on a real cluster each node is configured with them).
    with RayHead(num_cpus=2) as head:
        yield head


def ray_env(head: RayHead) -> dict[str, str]:
    return {
        "TUNEFORGE_EXECUTOR": "ray",
        "TUNEFORGE_RAY_ADDRESS": head.address,
        "TUNEFORGE_RAY_CPUS_PER_WORKER": "0.5",
    }


def start_worker(env: dict[str, str], data_dir: Path) -> subprocess.Popen:
    """`tuneforge worker` on "another machine": the same database and bucket, its own data dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "worker.log", "wb") as log:
        return subprocess.Popen(
            [TUNEFORGE, "worker"],
            env={**env, "TUNEFORGE_DATA_DIR": str(data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def states_in_bucket(srv) -> list[str]:
    """Saved states published to the bucket (one manifest each)."""
    from tuneforge.config import Settings
    from tuneforge.store.blobs import open_blobs

    settings = Settings(data_dir=srv.data_dir, blob_url=srv.env["TUNEFORGE_BLOB_URL"]).resolved()
    return [k for k in open_blobs(settings).keys("states") if k.endswith("/manifest.json")]


def messages(client, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=1000).data[::-1]]


def test_ray_job_on_s3_resumes_on_another_machine_and_is_served_by_a_third(
    server_factory, pg_url, s3_blob_url, ray_head, tmp_path
):
    srv = server_factory(
        {
            "TUNEFORGE_DATABASE_URL": pg_url,
            "TUNEFORGE_BLOB_URL": s3_blob_url,
            "TUNEFORGE_WORKERS": "0",  # the API process trains nothing: the workers below do
            **hold_env(HOLD),
            **ray_env(ray_head),
        }
    )
    c = srv.client()
    job = c.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=upload(c, jsonl(12)),
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": HP}},
    ).id
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    workers = [start_worker(srv.env, a)]
    try:
        wait_held(a / "jobs" / job, timeout=600)  # step 4 done; the state of step 3 published
        assert len(states_in_bucket(srv)) == 1
        workers[0].kill()  # machine a dies
        workers[0].wait()
        assert c.fine_tuning.jobs.retrieve(job).status == "running"

        release(b / "jobs" / job)  # the run on machine b goes past the hold
        workers.append(start_worker(srv.env, b))
        done = watch(c, job, FINISHED, timeout=600)
        assert done.status == "succeeded", done.error
    finally:
        for w in workers:
            stop(w)

    said = messages(c, job)
    assert "Resuming from step 3/6." in said  # from the state machine a published, on machine b
    assert metric_steps(c, job) == [1, 2, 3, 4, 4, 5, 6]
    # Every step's row is in the result file, those written on machine a included.
    csv = c.files.content(done.result_files[0]).text.splitlines()
    assert [line.split(",")[0] for line in csv[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert [k.step_number for k in c.fine_tuning.jobs.checkpoints.list(job).data] == [6, 3]

    # The API process (its own data dir, nothing trained there) serves the model from the bucket.
    model = done.fine_tuned_model
    answer = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is 1 + 1?"}], max_tokens=4
    )
    assert answer.model == model
    assert [p for p in (srv.data_dir / "cache" / "models").glob("*/*") if p.is_dir()]
    # The job is over: its saved state is gone from the bucket.
    wait_for(lambda: states_in_bucket(srv) == [], 10, "the finished job's state to leave the bucket")


def test_a_ray_job_whose_worker_dies_every_run_fails_after_the_attempt_limit(server_factory, ray_head):
    srv = server_factory(
        {**hold_env(1), **ray_env(ray_head), "TUNEFORGE_WORKERS": "1", "TUNEFORGE_JOB_MAX_ATTEMPTS": "2"}
    )
    c = srv.client()
    job = c.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=upload(c, jsonl(10)),
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 5}}},
    ).id
    job_dir = srv.data_dir / "jobs" / job
    for _ in range(2):  # the Ray worker of rank 0 dies (as an OOM kill would) on every run
        rank0 = wait_held(job_dir, timeout=600)
        (job_dir / "holding").unlink()
        os.kill(rank0, signal.SIGKILL)
    done = watch(c, job, FINISHED, timeout=600)
    assert done.status == "failed"
    assert done.error.code == "training_failed"
    assert done.error.message == (
        "The job failed after 2 attempts: the process running it stopped unexpectedly each time."
    )
    said = messages(c, job)
    lost = [m for m in said if m.startswith("A Ray training worker (rank 0) stopped unexpectedly")]
    assert len(lost) == 2, said
