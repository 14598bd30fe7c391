"""Job-finished notifications through the outbox: rows written with the status change, signed
webhooks the openai SDK verifies, retries with backoff across restarts, e-mail over real SMTP."""

from __future__ import annotations

import json
import time

import pytest
from openai import OpenAI
from sqlalchemy import select

from tuneforge.domain.states import Status, transition
from tuneforge.errors import NotFound
from tuneforge.integrations import outbox
from tuneforge.integrations.webhooks import sign
from tuneforge.services import jobs as jobs_service
from tuneforge.services.keys import get_or_create_project
from tuneforge.services.projects import update_settings
from tuneforge.services.webhooks import add_endpoint, remove_endpoint
from tuneforge.store.db import make_engine, make_sessionmaker, transaction
from tuneforge.store.tables import Delivery, Job

SDK = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")


def endpoint(db, url, **kw):
    with transaction(db) as s:
        e = add_endpoint(s, url, **kw)
        return e.id, e.secret


def cancel(db, project, job_id):
    with transaction(db) as s:
        jobs_service.cancel_job(s, project.id, job_id)


def deliveries(db, job_id=None):
    with db() as s:
        stmt = select(Delivery).order_by(Delivery.created_at, Delivery.id)
        if job_id:
            stmt = stmt.where(Delivery.job_id == job_id)
        return list(s.scalars(stmt))


def test_signature_matches_standard_webhooks_reference():
    # Reference vector from the Standard Webhooks spec / svix test suite.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_cancelled_job_webhook_verified_by_sdk(db, settings, project, create_job, receiver):
    endpoint_id, secret = endpoint(db, receiver.url, project="acme")
    job_id = create_job()
    cancel(db, project, job_id)
    [row] = deliveries(db, job_id)
    assert (row.kind, row.status, row.attempts, row.event_type) == (
        "webhook",
        "pending",
        0,
        "fine_tuning.job.cancelled",
    )

    assert outbox.deliver_due(settings, db) == 1
    [(headers, body)] = receiver.requests
    event = SDK.webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "fine_tuning.job.cancelled" and event.data.id == job_id
    assert event.id == headers["webhook-id"] == row.event_id and event.id.startswith("evt_")
    assert json.loads(body) == {
        "id": event.id,
        "object": "event",
        "type": "fine_tuning.job.cancelled",
        "created_at": event.created_at,
        "data": {"id": job_id},
    }
    with pytest.raises(Exception, match="signature"):  # a wrong secret does not verify
        SDK.webhooks.unwrap(body, headers, secret="whsec_" + "A" * 44)
    [row] = deliveries(db, job_id)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 1, "HTTP 200")
    assert outbox.deliver_due(settings, db) == 0  # delivered once, never again


def test_failing_endpoint_retried_with_backoff_across_restarts(settings, db, project, create_job, receiver):
    settings = settings.model_copy(update={"delivery_backoff_seconds": 1.0})
    _, secret = endpoint(db, receiver.url)  # every project
    receiver.statuses = [500, 503]  # two failures, then 200
    job_id = create_job()
    cancel(db, project, job_id)

    assert outbox.deliver_due(settings, db) == 1
    [row] = deliveries(db, job_id)
    assert (row.status, row.attempts, row.last_status) == ("pending", 1, "HTTP 500")
    first_retry = row.next_attempt_at
    assert first_retry - row.updated_at == 1  # backoff x 2^0
    assert outbox.deliver_due(settings, db) == 0  # not due yet

    deadline = time.monotonic() + 15
    while deliveries(db, job_id)[0].status == "pending" and time.monotonic() < deadline:
        # each pass through a fresh engine, as a restarted worker would
        engine = make_engine(settings.database_url)
        try:
            outbox.deliver_due(settings, make_sessionmaker(engine))
        finally:
            engine.dispose()
        time.sleep(0.2)
    [row] = deliveries(db, job_id)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 3, "HTTP 200")
    assert len(receiver.requests) == 3
    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert ids == {row.event_id}  # retries keep the event id
    headers, body = receiver.requests[-1]
    assert SDK.webhooks.unwrap(body, headers, secret=secret).data.id == job_id


def test_gives_up_after_max_attempts(settings, db, project, create_job):
    settings = settings.model_copy(update={"delivery_max_attempts": 1, "delivery_timeout_seconds": 2})
    endpoint(db, "http://127.0.0.1:9/closed-port")
    job_id = create_job()
    cancel(db, project, job_id)
    outbox.deliver_due(settings, db)
    [row] = deliveries(db, job_id)
    assert row.status == "failed" and row.attempts == 1 and row.last_status == "ConnectError"


def test_rows_only_with_a_committed_status_change(db, project, create_job, receiver):
    endpoint(db, receiver.url)
    job_id = create_job()
    with pytest.raises(RuntimeError):
        with transaction(db) as s:
            transition(s.get(Job, job_id), Status.FAILED)
            raise RuntimeError("rolled back")
    assert deliveries(db, job_id) == []
    with transaction(db) as s:  # non-terminal moves notify nobody
        transition(s.get(Job, job_id), Status.QUEUED)
    assert deliveries(db, job_id) == []


def test_endpoints_are_scoped_by_project_and_event(db, project, create_job, receiver):
    mine, _ = endpoint(db, receiver.url, project="acme")
    endpoint(db, receiver.url + "/other", project="someone-else")
    endpoint(db, receiver.url + "/succeeded-only", events=["fine_tuning.job.succeeded"])
    everyone, _ = endpoint(db, receiver.url + "/all")
    job_id = create_job()
    cancel(db, project, job_id)
    assert sorted(d.endpoint_id for d in deliveries(db, job_id)) == sorted([mine, everyone])
    with transaction(db) as s:
        remove_endpoint(s, mine)  # its pending deliveries go with it
    assert [d.endpoint_id for d in deliveries(db, job_id)] == [everyone]
    with transaction(db) as s, pytest.raises(NotFound):
        remove_endpoint(s, mine)


def test_job_finished_email_over_smtp(settings, db, project, create_job, smtp_server):
    settings = settings.model_copy(
        update={
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_from": "tuneforge@example.org",
        }
    )
    with transaction(db) as s:
        update_settings(s, "acme", notify_email="ml-team@example.org")
    job_id = create_job()
    cancel(db, project, job_id)
    assert outbox.deliver_due(settings, db) == 1
    [(sender, rcpts, msg)] = smtp_server.messages
    assert sender == "tuneforge@example.org" and rcpts == ["ml-team@example.org"]
    assert msg["Subject"] == f"[tuneforge] Fine-tuning job {job_id} cancelled"
    assert "Model: tuneforge-tiny" in msg.get_content()
    [row] = deliveries(db, job_id)
    assert (row.kind, row.status, row.attempts) == ("email", "delivered", 1)


def test_email_without_smtp_server_fails_visibly(settings, db, project, create_job):
    with transaction(db) as s:
        update_settings(s, "acme", notify_email="ml-team@example.org")
        get_or_create_project(s, "acme")
    job_id = create_job()
    cancel(db, project, job_id)
    outbox.deliver_due(settings, db)
    [row] = deliveries(db, job_id)
    assert (row.status, row.last_status) == ("failed", "no-smtp")
    assert "TUNEFORGE_SMTP_HOST" in row.last_error
