"""The worker's validation stage with the real validator, on both databases: good files move the
job to queued; bad files fail it with OpenAI's codes; a job cancelled meanwhile stays cancelled."""

from __future__ import annotations

from sqlalchemy import select

from tuneforge.jobs.worker import Worker
from tuneforge.services import jobs as service
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job, JobEvent

from .conftest import chat_lines


def run_validation(settings, db, jid):
    w = Worker(settings)
    try:
        w.concurrency = 0  # validation only: nothing trains in these tests
        w.step()
    finally:
        w.engine.dispose()
    with db() as s:
        job = s.get(Job, jid)
        events = s.scalars(select(JobEvent).where(JobEvent.job_id == jid).order_by(JobEvent.seq)).all()
    return job, events


def test_valid_files_move_the_job_to_queued(settings, db, create, upload):
    jid = create(validation_file=upload(chat_lines(10)))
    job, events = run_validation(settings, db, jid)
    assert (job.status, job.lease_owner, job.attempts, job.error) == ("queued", None, 0, None)
    assert events[-1].message == "Files validated, moving job to queued state"


def test_too_few_examples_fails_with_invalid_n_examples(settings, db, create, upload):
    jid = create(training_file=upload(chat_lines(7)))
    job, events = run_validation(settings, db, jid)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error == {
        "code": "invalid_n_examples",
        "param": "training_file",
        "message": "Training file has 7 example(s), but must have at least 10 examples",
    }
    assert (events[-1].level, events[-1].message) == ("error", job.error["message"])


def test_malformed_line_fails_with_invalid_training_file_naming_the_line(settings, db, create, upload):
    bad = chat_lines(11) + '{"messages": [{"content": "no role"}]}\n'
    jid = create(training_file=upload(bad))
    job, _ = run_validation(settings, db, jid)
    assert job.error["code"] == "invalid_training_file"
    assert job.error["param"] == "training_file"
    assert "Line 12" in job.error["message"]


def test_bad_validation_file_names_validation_file(settings, db, create, upload):
    jid = create(validation_file=upload("not json\n" * 12))
    job, _ = run_validation(settings, db, jid)
    assert job.status == "failed" and job.error["param"] == "validation_file"


def test_cancelled_before_validation_is_never_revived(settings, db, create, project):
    jid = create()
    with transaction(db) as s:
        service.cancel_job(s, project.id, jid)
    job, _ = run_validation(settings, db, jid)
    assert job.status == "cancelled"
