"""The jobs table is the queue: atomic claim, lease, heartbeat, release.

A job is claimable when nobody holds a live lease on it and it is
- `validating_files` (stage "validate": the worker checks its files), or
- `queued`, or `running` with a lease that expired or was given back (stage "train": a worker
  whose child died, or a worker that died, leaves the job for the next claim to resume).

Claiming is atomic on both databases: PostgreSQL picks a row with `FOR UPDATE SKIP LOCKED` (two
workers never wait on, nor take, the same row); SQLite serialises writers, so a conditional
`UPDATE … WHERE id = ? AND <still claimable>` that reports one changed row is a win and zero is a
loss to a faster worker. Every claim counts an attempt; `attempts` is reset when a job reaches a
clean resting point (validated → queued, resumed after a pause).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.domain.states import Status
from tuneforge.ids import now
from tuneforge.store.tables import Job

Stage = Literal["validate", "train"]


@dataclass(frozen=True)
class Claim:
    job_id: str
    stage: Stage
    attempt: int  # 1 for the first claim since the job's last resting point
    recovered: bool  # True when the job was `running` (a previous run died)


def _lease_free(ts: int):
    return or_(Job.lease_owner.is_(None), Job.lease_expires_at.is_(None), Job.lease_expires_at < ts)


def _claimable(stage: Stage, ts: int):
    if stage == "validate":
        statuses = [Status.VALIDATING_FILES.value]
    else:
        statuses = [Status.QUEUED.value, Status.RUNNING.value]
    return and_(Job.status.in_(statuses), _lease_free(ts))


def claim(
    factory: sessionmaker[Session], owner: str, *, stage: Stage, lease_seconds: int, job_id: str | None = None
) -> Claim | None:
    """Atomically take the oldest claimable job of `stage` (or exactly `job_id`) for `owner`."""
    ts = now()
    with factory() as session, session.begin():
        cond = _claimable(stage, ts)
        if job_id is not None:
            cond = and_(cond, Job.id == job_id)
        pick = select(Job.id, Job.status).where(cond).order_by(Job.created_at, Job.id)
        if session.get_bind().dialect.name == "postgresql":
            rows = session.execute(pick.limit(1).with_for_update(skip_locked=True)).all()
        else:
            rows = session.execute(pick.limit(8)).all()
        for jid, status in rows:
            result = session.execute(
                update(Job)
                .where(Job.id == jid, _claimable(stage, ts))
                .values(
                    lease_owner=owner,
                    lease_expires_at=ts + lease_seconds,
                    attempts=Job.attempts + 1,
                    updated_at=ts,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                attempts = session.execute(select(Job.attempts).where(Job.id == jid)).scalar_one()
                return Claim(jid, stage, attempts, recovered=status == Status.RUNNING.value)
    return None


def heartbeat(factory: sessionmaker[Session], job_id: str, owner: str, *, lease_seconds: int) -> bool:
    """Extend `owner`'s lease. False when the lease is no longer ours (lost or job finished)."""
    ts = now()
    with factory() as session, session.begin():
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(lease_expires_at=ts + lease_seconds)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def release(factory: sessionmaker[Session], job_id: str, owner: str) -> None:
    """Give the lease back (if still ours) so the next claim can take the job at once."""
    with factory() as session, session.begin():
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
