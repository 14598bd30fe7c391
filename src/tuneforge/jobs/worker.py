"""The worker loop (`tuneforge worker`; `tuneforge serve` starts Settings.workers of them).

Each pass it
1. validates one `validating_files` job in-process (the training engine's validator is cheap and
   needs no model): → `queued`, or `failed` with the validator's error;
2. fills its free training slots (Settings.worker_concurrency) by claiming `queued` jobs, or
   `running` jobs whose worker died (expired lease), each run in a child process
   (`python -m tuneforge.jobs.runner`) that dies with the worker (PR_SET_PDEATHSIG);
3. heartbeats the leases of its children, and reaps those that exited: a child that died without
   closing its job leaves it `running` with the lease given back, so the next claim resumes it
   from its saved state; after Settings.job_max_attempts runs the job fails with a clear error.

On SIGTERM/SIGINT the worker asks its children to save their state (a pause it turns back into
`queued`), waits for them a bounded time, kills what is left and gives every lease back: a
restarted worker continues where this one stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.domain import events as ev
from tuneforge.domain.states import Status, transition
from tuneforge.ids import new_id, now
from tuneforge.integrations import outbox
from tuneforge.jobs import job_state, queue
from tuneforge.jobs.lease import EXIT_GIVEN_BACK, LeaseLost, fail_job, owned_job
from tuneforge.logs import configure as configure_logging
from tuneforge.services import preflight
from tuneforge.services.expiry import sweep_expired
from tuneforge.store.blobs import open_blobs
from tuneforge.store.db import make_engine, make_sessionmaker, migrate, transaction
from tuneforge.store.tables import File, Job

log = logging.getLogger("tuneforge.jobs.worker")

SHUTDOWN_GRACE_SECONDS = 30.0
# A child that closed its job should exit within moments; one still there after this is stuck.
EXIT_GRACE_SECONDS = 60.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment plus the Settings a child must share with it (where the
    database and the bytes are), however they were given here (flags, env, code)."""
    env = dict(os.environ)
    env["TUNEFORGE_DATA_DIR"] = str(settings.data_dir)
    env["TUNEFORGE_DATABASE_URL"] = str(settings.database_url)
    if settings.blob_url:
        env["TUNEFORGE_BLOB_URL"] = settings.blob_url
    if settings.blob_cache_dir is not None:
        env["TUNEFORGE_BLOB_CACHE_DIR"] = str(settings.blob_cache_dir)
    return env


@dataclass
class _Child:
    job_id: str
    proc: subprocess.Popen
    last_beat: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when we saw that it had closed its job (it is exiting)


class Worker:
    def __init__(self, settings: Settings, *, concurrency: int | None = None):
        self.settings = settings.resolved()
        self.concurrency = max(
            0, concurrency if concurrency is not None else self.settings.worker_concurrency
        )
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id('', 6)}"
        self.lease = self.settings.job_lease_seconds
        self.engine = make_engine(self.settings.database_url)
        self.factory: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.blobs = open_blobs(self.settings)
        self.children: dict[str, _Child] = {}

    # ---- loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        migrate(self.engine)
        outbox.start_sender(self.settings, self.factory, stop)  # webhooks and e-mails
        log.info("worker %s started (concurrency %d)", self.owner, self.concurrency)
        next_sweep = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_sweep:
                    self._sweep_expired()
                    next_sweep = time.monotonic() + self.settings.expiry_sweep_seconds
                busy = self.step()
                if not busy:
                    stop.wait(self.settings.worker_poll_seconds)
        finally:
            self.shutdown()

    def step(self) -> bool:
        """One pass; True when it did something (so the loop goes again without sleeping)."""
        did = self._validate_one()
        while len(self.children) < self.concurrency:
            claim = queue.claim(self.factory, self.owner, stage="train", lease_seconds=self.lease)
            if claim is None:
                break
            did = True
            if claim.attempt > self.settings.job_max_attempts:
                self._give_up(claim.job_id, claim.attempt - 1)
                continue
            self._spawn(claim.job_id)
        self._watch()
        return did

    def _sweep_expired(self) -> None:
        try:
            sweep_expired(self.factory, self.blobs)
            job_state.sweep_ended(self.factory, self.blobs)  # states of jobs that ended elsewhere
        except Exception:  # housekeeping: never the reason a worker stops training
            log.exception("expiry sweep failed; will retry")

    # ---- validation --------------------------------------------------------------------------
    def _validate_one(self) -> bool:
        claim = queue.claim(self.factory, self.owner, stage="validate", lease_seconds=self.lease)
        if claim is None:
            return False
        try:
            self._validate(claim.job_id)
        except LeaseLost:
            pass  # cancelled meanwhile (or taken over): nothing to record
        except Exception as exc:  # a validator bug must not loop forever on one job
            log.exception("validation of %s crashed", claim.job_id)
            try:
                with transaction(self.factory) as s:
                    fail_job(
                        s,
                        owned_job(s, claim.job_id, self.owner),
                        "validation_failed",
                        f"The job failed while validating its files: {exc}",
                    )
            except LeaseLost:
                pass
        return True

    def _validate(self, job_id: str) -> None:
        from tuneforge.training.data import validate_file

        with self.factory() as s:
            job = owned_job(s, job_id, self.owner)
            kind = (job.method or {}).get("type", "supervised")  # dpo files hold pairs
            files = [("training_file", job.training_file)]
            if job.validation_file:
                files.append(("validation_file", job.validation_file))
            keys = {}
            for param, file_id in files:
                row = s.scalar(select(File).where(File.id == file_id, File.project_id == job.project_id))
                keys[param] = (file_id, row.blob_key if row else None)
        error = None
        for param, (file_id, key) in keys.items():
            if key is None or not self.blobs.exists(key):
                error = (f"invalid_{param}", f"invalid {param}: {file_id}", param)
            else:
                with self.blobs.local_file(key) as path:
                    error = validate_file(
                        path, file_param=param, method=kind
                    ).job_error() or preflight.check_file(self.settings, self.factory, job_id, param, path)
            if error:
                break
        with transaction(self.factory) as s:
            job = owned_job(s, job_id, self.owner)
            if job.status != Status.VALIDATING_FILES.value:
                return
            if error:
                fail_job(s, job, *error)
            else:
                transition(job, Status.QUEUED)
                job.attempts = 0
                ev.add_event(s, job.id, ev.VALIDATED)

    # ---- training children -------------------------------------------------------------------
    def _spawn(self, job_id: str) -> None:
        env = child_env(self.settings)
        # The child writes the result file: it must encode it as this worker's Settings say.
        env["TUNEFORGE_RESULT_FILES_BASE64"] = str(self.settings.result_files_base64).lower()
        if self.settings.test_hold_at_step is not None:
            env["TUNEFORGE_TEST_HOLD_AT_STEP"] = str(self.settings.test_hold_at_step)
        # Where the child trains, as this worker's Settings say (executors.py).
        for name in ("executor", "ray_workers", "ray_cpus_per_worker", "ray_gpus_per_worker"):
            env[f"TUNEFORGE_{name.upper()}"] = str(getattr(self.settings, name))
        env["TUNEFORGE_RAY_RESOURCES"] = json.dumps(
            {k: v.model_dump(exclude_none=True) for k, v in self.settings.ray_resources.items()}
        )
        if self.settings.ray_address:
            env["TUNEFORGE_RAY_ADDRESS"] = self.settings.ray_address
        cmd = [sys.executable, "-m", "tuneforge.jobs.runner", job_id, "--owner", self.owner]
        proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
        self.children[job_id] = _Child(job_id, proc)
        log.info("job %s: training in child pid %d", job_id, proc.pid)

    def _watch(self) -> None:
        beat_every = max(1.0, self.lease / 3)
        for job_id, child in list(self.children.items()):
            rc = child.proc.poll()
            if rc is not None:
                del self.children[job_id]
                self._reap(job_id, rc)
            elif child.closed_at is not None:
                if time.monotonic() - child.closed_at > EXIT_GRACE_SECONDS:
                    log.warning(
                        "job %s: child pid %d closed its job %ds ago but has not exited; stopping it",
                        job_id,
                        child.proc.pid,
                        EXIT_GRACE_SECONDS,
                    )
                    child.proc.terminate()
                    child.closed_at = float("inf")  # terminate once; the next poll reaps it
            elif time.monotonic() - child.last_beat >= beat_every:
                if queue.heartbeat(self.factory, job_id, self.owner, lease_seconds=self.lease):
                    child.last_beat = time.monotonic()
                else:
                    self._lease_gone(child)

    def _lease_gone(self, child: _Child) -> None:
        """The heartbeat found the lease no longer ours. Either our child closed the job (its final
        transition clears the lease: it is on its way out) or someone else holds it now."""
        with self.factory() as s:
            row = s.execute(select(Job.status, Job.lease_owner).where(Job.id == child.job_id)).first()
        if row is not None and row.status != Status.RUNNING.value:
            log.info("job %s: %s; waiting for child pid %d to exit", child.job_id, row.status, child.proc.pid)
            child.closed_at = time.monotonic()
            return
        holder = (
            "the job no longer exists"
            if row is None
            else f"lease taken by {row.lease_owner}"
            if row.lease_owner
            else "lease released"
        )
        log.warning("job %s: lease lost (%s); stopping its child", child.job_id, holder)
        child.proc.terminate()
        child.last_beat = time.monotonic()  # say it (and signal) once per beat, not every pass

    def _reap(self, job_id: str, rc: int) -> None:
        """The child exited. If it did not close its job, give the job back (or fail it)."""
        with transaction(self.factory) as s:
            job = s.scalar(select(Job).where(Job.id == job_id))
            if job is None or job.lease_owner != self.owner:
                return
            if job.status == Status.RUNNING.value and rc != EXIT_GIVEN_BACK:  # (that one said why)
                log.warning("job %s: child exited with %s without finishing", job_id, rc)
                ev.add_event(
                    s,
                    job_id,
                    f"The training process stopped unexpectedly (exit code "
                    f"{rc}); the job will resume from its last saved state",
                    level="warn",
                )
            job.lease_owner = None
            job.lease_expires_at = None

    def _give_up(self, job_id: str, runs: int) -> None:
        with transaction(self.factory) as s:
            try:
                job = owned_job(s, job_id, self.owner)
            except LeaseLost:
                return
            fail_job(
                s,
                job,
                "training_failed",
                f"The job failed after {runs} attempts: the process running it stopped "
                "unexpectedly each time.",
            )
            job_state.drop(s, self.blobs, job)

    # ---- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        if self.children:
            # Ask every child to save its state; the runner turns this pause back into `queued`.
            with transaction(self.factory) as s:
                s.execute(
                    update(Job)
                    .where(
                        Job.id.in_(list(self.children)),
                        Job.lease_owner == self.owner,
                        Job.status == Status.RUNNING.value,
                        Job.requested_action.is_(None),
                    )
                    .values(requested_action="requeue", updated_at=now())
                    .execution_options(synchronize_session=False)
                )
            deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
            while self.children and time.monotonic() < deadline:
                for job_id, child in list(self.children.items()):
                    if child.proc.poll() is not None:
                        del self.children[job_id]
                        self._reap(job_id, child.proc.returncode)
                time.sleep(0.2)
            for job_id, child in list(self.children.items()):
                child.proc.kill()
                child.proc.wait()
                self._reap(job_id, child.proc.returncode)
            self.children.clear()
        self.engine.dispose()
        log.info("worker %s stopped", self.owner)


def main(argv: list[str] | None = None) -> int:
    """Entry point of a standalone worker (also what `tuneforge serve` starts)."""
    settings = Settings()
    configure_logging(settings.log_level, process="worker")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    concurrency = int(argv[0]) if argv else None
    Worker(settings, concurrency=concurrency).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


class WorkerProcesses:
    """`n` standalone worker processes, as `tuneforge serve` runs them beside the API server.

    Each is `python -m tuneforge.jobs.worker` with the server's Settings in its environment and
    dies with the server (PR_SET_PDEATHSIG), so a killed server never leaves a training behind.
    """

    def __init__(self, settings: Settings, n: int):
        settings = settings.resolved()
        env = child_env(settings)
        cmd = [sys.executable, "-m", "tuneforge.jobs.worker"]
        self.procs = [subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent) for _ in range(max(0, n))]

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS + 5) -> None:
        """SIGTERM (each worker saves and re-queues its trainings), then kill what is left."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
