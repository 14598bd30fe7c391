"""The jobs table as a queue, on SQLite and PostgreSQL: claim order, leases, recovery, races."""

from __future__ import annotations

import threading

from sqlalchemy import update

from tuneforge.domain.states import Status, transition
from tuneforge.ids import now
from tuneforge.jobs import queue
from tuneforge.store.db import make_engine, make_sessionmaker, transaction
from tuneforge.store.tables import Job


def set_job(db, job_id, **values):
    with transaction(db) as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def get(db, job_id) -> Job:
    with db() as s:
        return s.get(Job, job_id)


def test_validate_stage_claims_oldest_and_lease_blocks_others(db, create):
    first, second = create(), create()
    set_job(db, second, created_at=get(db, first).created_at + 1)
    c1 = queue.claim(db, "w1", stage="validate", lease_seconds=30)
    assert (c1.job_id, c1.attempt, c1.recovered) == (first, 1, False)
    c2 = queue.claim(db, "w2", stage="validate", lease_seconds=30)
    assert c2.job_id == second
    assert queue.claim(db, "w3", stage="validate", lease_seconds=30) is None
    # nothing is queued yet, so there is nothing to train
    assert queue.claim(db, "w3", stage="train", lease_seconds=30) is None
    assert get(db, first).lease_owner == "w1"


def test_train_stage_skips_paused_and_terminal_jobs(db, create):
    ids = [create() for _ in range(3)]
    for jid, status in zip(ids, ["paused", "succeeded", "cancelled"]):
        set_job(db, jid, status=status)
    assert queue.claim(db, "w1", stage="train", lease_seconds=30) is None
    set_job(db, ids[0], status="queued")
    assert queue.claim(db, "w1", stage="train", lease_seconds=30).job_id == ids[0]


def test_heartbeat_extends_only_our_lease_and_release_frees_it(db, create):
    jid = create()
    queue.claim(db, "w1", stage="validate", lease_seconds=5)
    before = get(db, jid).lease_expires_at
    assert queue.heartbeat(db, jid, "w1", lease_seconds=100)
    assert get(db, jid).lease_expires_at >= before + 90
    assert not queue.heartbeat(db, jid, "intruder", lease_seconds=100)
    queue.release(db, jid, "intruder")  # not theirs: no effect
    assert get(db, jid).lease_owner == "w1"
    queue.release(db, jid, "w1")
    assert get(db, jid).lease_owner is None
    assert queue.claim(db, "w2", stage="validate", lease_seconds=5).attempt == 2


def test_expired_lease_of_a_running_job_is_recovered_with_attempts_counted(db, create):
    jid = create()
    with transaction(db) as s:
        job = s.get(Job, jid)
        transition(job, Status.QUEUED)
        job.attempts = 0
    c = queue.claim(db, "w1", stage="train", lease_seconds=30)
    assert (c.attempt, c.recovered) == (1, False)
    set_job(db, jid, status="running")
    # w1 is alive: its lease protects the job
    assert queue.claim(db, "w2", stage="train", lease_seconds=30) is None
    set_job(db, jid, lease_expires_at=now() - 1)  # w1 died and stopped heartbeating
    c = queue.claim(db, "w2", stage="train", lease_seconds=30)
    assert (c.job_id, c.attempt, c.recovered) == (jid, 2, True)
    assert get(db, jid).lease_owner == "w2"
    assert not queue.heartbeat(db, jid, "w1", lease_seconds=30)  # the dead worker lost it


def test_two_workers_racing_for_one_job_exactly_one_wins(db, create, settings):
    jid = create()
    engines = [make_engine(settings.database_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def worker(i: int) -> None:
        factory = make_sessionmaker(engines[i])
        barrier.wait()
        results[i] = queue.claim(factory, f"w{i}", stage="validate", lease_seconds=30)

    for _round in range(5):  # several rounds: a lucky interleaving must not hide a race
        set_job(db, jid, lease_owner=None, lease_expires_at=None)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert get(db, jid).lease_owner == f"w{results.index(winners[0])}"
    for e in engines:
        e.dispose()


def test_many_workers_many_jobs_each_job_claimed_once(db, create, settings):
    ids = {create() for _ in range(6)}
    engines = [make_engine(settings.database_url) for _ in range(4)]
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        factory = make_sessionmaker(engines[i])
        barrier.wait()
        while (c := queue.claim(factory, f"w{i}", stage="validate", lease_seconds=30)) is not None:
            with lock:
                claimed.append(c.job_id)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert sorted(claimed) == sorted(ids)
