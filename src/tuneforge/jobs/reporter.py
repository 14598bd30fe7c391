"""The DB-backed Reporter the training engine talks to inside a job's child process.

Everything it hears becomes rows at once (its own engine, one short transaction per call), so
events, metrics and checkpoints appear live through the API, and a checkpoint becomes a servable
`fine_tuned_models` row the moment the trainer reports it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.domain import events as ev
from tuneforge.domain import naming
from tuneforge.domain.states import Status
from tuneforge.ids import new_id, now
from tuneforge.jobs import job_state
from tuneforge.services.files import on_outcome
from tuneforge.store.blobs import BlobStore, is_model_key
from tuneforge.store.db import transaction
from tuneforge.store.tables import FineTunedModel, Job, JobCheckpoint
from tuneforge.training import hparams
from tuneforge.training.spec import CHECKPOINT_META, ResolvedHyperparameters, StopRequest

METRIC_KEYS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "total_steps",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
    # DPO (training/dpo.py): TRL's rewards/* on the training batch and validation
    "train_rewards_chosen",
    "train_rewards_rejected",
    "train_rewards_accuracy",
    "train_rewards_margin",
    "valid_rewards_accuracy",
    "valid_rewards_margin",
    "full_valid_rewards_accuracy",
    "full_valid_rewards_margin",
)
POLL_SECONDS = 1.0
log = logging.getLogger("tuneforge.jobs.reporter")


def read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / CHECKPOINT_META).read_text())
    except (OSError, ValueError):
        return {}


def _same_dir(a: str, b: str) -> bool:
    return a == b or (Path(a).is_dir() and Path(a).resolve() == Path(b).resolve())


def drop_model_dirs(blobs: BlobStore, refs: list[str]) -> None:
    """Remove the published directories of deleted model rows (rows written before models were
    blobs hold the job's own path: those stay with the job)."""
    for ref in refs:
        if is_model_key(ref):
            blobs.delete_dir(ref)


HOLDING, RELEASE = "holding", "release-hold"  # files of the test-only hold, in the job's dir
HOLD_POLL_SECONDS = 0.05


class DbReporter:
    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        job_id: str,
        owner: str,
        project_id: str,
        project_name: str,
        model: str,
        suffix: str | None,
        fallback_base: str,
        blobs: BlobStore,
        loaded_base: str | None = None,
        hold_at_step: int | None = None,
        job_dir: Path | None = None,
    ):
        self._factory = factory
        self.job_id = job_id
        self._owner = owner
        self._project_id = project_id
        self._project_name = project_name
        self._model = model
        self._suffix = suffix
        self.fallback_base = fallback_base  # what an adapter attaches to if tuneforge.json lacks it
        # A stored model the trainer loaded from a local copy (`loaded_base`) is recorded as
        # `fallback_base` (its blob key), which any machine can resolve; not as this machine's path.
        self._loaded_base = loaded_base
        self.blobs = blobs  # where checkpoints and the final model are published
        self.final_name = naming.model_name(model, project_name, suffix, job_id)
        self.total_steps: int | None = None
        self._first_step: tuple[int, float] | None = None
        self._last_poll = 0.0
        self._last_answer: StopRequest | None = None
        self._last_eta_write = 0.0
        self._hold_at_step = hold_at_step  # Settings.test_hold_at_step (tests only)
        self._job_dir = job_dir
        # What builds the same reporter elsewhere (a Ray worker: jobs/ray_executor.py), on its own engine.
        self.args: dict[str, Any] = {
            "job_id": job_id,
            "owner": owner,
            "project_id": project_id,
            "project_name": project_name,
            "model": model,
            "suffix": suffix,
            "fallback_base": fallback_base,
            "hold_at_step": hold_at_step,
            "job_dir": job_dir,
        }

    # ---- Reporter protocol ---------------------------------------------------------------
    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        with transaction(self._factory) as s:
            ev.add_event(s, self.job_id, message, level=level, data=data if data is not None else {})

    def hyperparameters(self, resolved: ResolvedHyperparameters) -> None:
        with transaction(self._factory) as s:
            job = s.get(Job, self.job_id)
            # The job's one record of its hyperparameters: now the values the trainer uses.
            kind = (job.method or {}).get("type", "supervised")
            job.method = hparams.method_object(kind, resolved)
            job.updated_at = now()

    def metrics(self, data: dict[str, Any]) -> None:
        payload = {k: data[k] for k in METRIC_KEYS if data.get(k) is not None}
        step, total = int(payload["step"]), int(payload["total_steps"])
        self.total_steps = total
        t = time.monotonic()
        if self._first_step is None or step <= self._first_step[0]:
            self._first_step = (step, t)
        with transaction(self._factory) as s:
            ev.add_event(s, self.job_id, ev.metrics_message(payload), type="metrics", data=payload)
            done = step - self._first_step[0]
            if done > 0 and t - self._last_eta_write >= POLL_SECONDS:
                per_step = (t - self._first_step[1]) / done
                job = s.get(Job, self.job_id)
                job.estimated_finish = now() + int(per_step * (total - step)) + 1
                self._last_eta_write = t
        if step == self._hold_at_step:
            self._hold()

    def _hold(self) -> None:
        """Test only (Settings.test_hold_at_step): wait here, after the step's metrics are written,
        until the job is asked to stop or the test writes `release-hold` in the job's dir; the
        next `stop_requested` then reads the request at once. `holding` (this process's pid) tells
        a test the trainer is waiting."""
        job_dir = Path(self._job_dir or ".")
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / HOLDING).write_text(str(os.getpid()))
        while not (job_dir / RELEASE).exists():
            with self._factory() as s:
                row = s.execute(select(Job.status, Job.requested_action).where(Job.id == self.job_id)).first()
            # (A lost lease does not end the hold: the worker that lost it kills this process.)
            if row is None or row.status != Status.RUNNING.value or row.requested_action is not None:
                break
            time.sleep(HOLD_POLL_SECONDS)
        self._last_poll = 0.0

    def base_of(self, meta: dict[str, Any]) -> str:
        """What a model the trainer wrote attaches to, as the store should record it."""
        base = str(meta.get("base_model") or self.fallback_base)
        if self._loaded_base is not None and _same_dir(base, self._loaded_base):
            return self.fallback_base
        return base

    def model_row(
        self, name: str, checkpoint_id: str, meta: dict[str, Any], key: str, *, base_model: str | None = None
    ) -> FineTunedModel:
        """The servable row of a model this job wrote (a checkpoint's, or the final one when the
        job succeeds: runner.py): `meta` is its tuneforge.json, `key` its published blob key,
        `base_model` the base as resolved where it was written (else read from `meta`)."""
        return FineTunedModel(
            id=name,
            project_id=self._project_id,
            job_id=self.job_id,
            checkpoint_id=checkpoint_id,
            kind=meta.get("kind", "lora"),
            base_model=base_model or self.base_of(meta),
            path=key,
            created_at=now(),
        )

    def checkpoint(self, step: int, epoch: int, path: Path, metrics: dict[str, Any]) -> None:
        final = self.total_steps is not None and step >= self.total_steps
        meta = read_meta(path)
        clean = {
            k: float(v)
            for k, v in (metrics or {}).items()
            if k in METRIC_KEYS and k != "total_steps" and v is not None
        }
        clean.setdefault("step", float(step))
        with transaction(self._factory) as s:
            existing = s.scalar(
                select(JobCheckpoint).where(
                    JobCheckpoint.job_id == self.job_id, JobCheckpoint.step_number == step
                )
            )
            if existing is not None:  # re-reported after a resume: same epoch, newer metrics
                existing.metrics = clean
                return
        # Published before its row exists (the row makes it servable); unpublished if the row is not.
        key = None if final else self.blobs.put_dir(Path(path))
        with transaction(self._factory) as s:
            if key is not None:
                on_outcome(s, rolled_back=lambda: self.blobs.delete_dir(key))
            name = (
                self.final_name
                if final
                else naming.checkpoint_name(self._model, self._project_name, self._suffix, step)
            )
            ckpt = JobCheckpoint(
                id=new_id("ftckpt_"),
                job_id=self.job_id,
                created_at=now(),
                step_number=step,
                fine_tuned_model_checkpoint=name,
                metrics=clean,
            )
            s.add(ckpt)
            if key is not None:
                # Not final: the final step's model is registered from final/ when the job succeeds.
                s.add(self.model_row(name, ckpt.id, meta, key))
                ev.add_event(s, self.job_id, ev.checkpoint_created(step, name))

    def checkpoint_removed(self, step: int, path: Path) -> None:
        with transaction(self._factory) as s:
            ckpt = s.scalar(
                select(JobCheckpoint).where(
                    JobCheckpoint.job_id == self.job_id, JobCheckpoint.step_number == step
                )
            )
            if ckpt is None:
                return
            keys = s.scalars(
                delete(FineTunedModel)
                .where(FineTunedModel.checkpoint_id == ckpt.id, FineTunedModel.job_id == self.job_id)
                .returning(FineTunedModel.path)
            ).all()
            s.delete(ckpt)
            # The row goes first: nobody resolves the name once its bytes start to go.
            on_outcome(s, committed=lambda: drop_model_dirs(self.blobs, keys))

    def state_saved(self, output_dir: Path, step: int) -> None:
        """The trainer saved its resumable state: published where another machine can resume
        the job (a remote blob store), else left where it is (job_state.py)."""
        try:
            job_state.publish(
                self.blobs,
                self._factory,
                job_id=self.job_id,
                owner=self._owner,
                output_dir=output_dir,
                step=step,
            )
        except Exception as exc:  # noqa: BLE001  the store is down: train on, resumable here only
            log.warning("job %s: publishing the state of step %d failed", self.job_id, step, exc_info=True)
            self.event(
                f"The saved state of step {step} could not be copied to the blob store "
                f"({type(exc).__name__}: {exc}); only this machine can resume from it",
                level="warn",
            )

    def stop_requested(self) -> StopRequest | None:
        t = time.monotonic()
        if t - self._last_poll < POLL_SECONDS:
            return self._last_answer
        self._last_poll = t
        with self._factory() as s:
            row = s.execute(
                select(Job.status, Job.requested_action, Job.lease_owner).where(Job.id == self.job_id)
            ).first()
        if row is None or row.status != Status.RUNNING.value or row.lease_owner != self._owner:
            # The job was deleted, finished elsewhere, or another worker took it over: stop.
            self._last_answer = StopRequest.CANCEL
        elif row.requested_action == "cancel":
            self._last_answer = StopRequest.CANCEL
        elif row.requested_action in ("pause", "requeue"):  # requeue: the worker is stopping
            self._last_answer = StopRequest.PAUSE
        else:
            self._last_answer = None
        return self._last_answer
