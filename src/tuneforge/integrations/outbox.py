"""The notification outbox: job-finished webhooks and e-mails, written with the status change and
sent by the workers, retried with exponential backoff across restarts.

`on_job_finished` runs inside the transaction that moves a job to succeeded / failed / cancelled
(called from `domain.states.transition`), so a notification exists if and only if the status change
committed. `deliver_due` is what a worker's sender thread runs: it claims due rows (a conditional
UPDATE on `next_attempt_at`, so two workers never send the same attempt), makes one attempt each,
and records the outcome: delivered, or the next attempt time (backoff base x 2^(n-1)), or failed
after Settings.delivery_max_attempts. A sender that dies mid-attempt leaves the row claimed for a
lease; after it the row is due again.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.ids import new_id, now
from tuneforge.integrations import email as mail
from tuneforge.integrations import webhooks
from tuneforge.pricing import training_cost
from tuneforge.store.db import transaction
from tuneforge.store.tables import Delivery, Job, Project, WebhookEndpoint

log = logging.getLogger("tuneforge.integrations.outbox")

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
MAX_BACKOFF_SECONDS = 6 * 3600
BATCH = 20


def on_job_finished(session: Session, job: Job) -> None:
    """Queue every notification for `job`'s terminal status, in the caller's transaction."""
    event_type = f"fine_tuning.job.{job.status}"
    if event_type not in webhooks.JOB_EVENTS:
        return
    ts = now()
    event_id = new_id("evt_")
    payload = webhooks.event_payload(event_id, event_type, ts, job.id)

    def queue(kind: str, target: str, endpoint_id: str | None) -> None:
        session.add(
            Delivery(
                id=new_id("dlv_"),
                kind=kind,
                endpoint_id=endpoint_id,
                project_id=job.project_id,
                job_id=job.id,
                event_id=event_id,
                event_type=event_type,
                target=target,
                payload=payload,
                status=PENDING,
                attempts=0,
                next_attempt_at=ts,
                created_at=ts,
                updated_at=ts,
            )
        )

    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            or_(WebhookEndpoint.project_id == job.project_id, WebhookEndpoint.project_id.is_(None))
        )
    )
    for endpoint in endpoints:
        if event_type in (endpoint.events or webhooks.JOB_EVENTS):
            queue("webhook", endpoint.url, endpoint.id)
    project = session.get(Project, job.project_id)
    address = (project.settings or {}).get("notify_email") if project is not None else None
    if address:
        queue("email", address, None)


# ---- sending ---------------------------------------------------------------------------------
def _claim(factory: sessionmaker[Session], settings: Settings, limit: int) -> list[str]:
    ts = now()
    lease = int(settings.delivery_timeout_seconds) + 30
    with factory() as s:
        due = s.execute(
            select(Delivery.id, Delivery.next_attempt_at)
            .where(Delivery.status == PENDING, Delivery.next_attempt_at <= ts)
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        ).all()
    claimed = []
    for delivery_id, next_at in due:
        with transaction(factory) as s:
            result = s.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.status == PENDING,
                    Delivery.next_attempt_at == next_at,
                )
                .values(next_attempt_at=ts + lease, updated_at=ts)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                claimed.append(delivery_id)
    return claimed


def deliver_due(settings: Settings, factory: sessionmaker[Session], limit: int = BATCH) -> int:
    """Make one attempt for each due delivery (at most `limit`); returns how many were tried."""
    ids = _claim(factory, settings, limit)
    for delivery_id in ids:
        _attempt(settings, factory, delivery_id)
    return len(ids)


def _attempt(settings: Settings, factory: sessionmaker[Session], delivery_id: str) -> None:
    with factory() as s:
        d = s.get(Delivery, delivery_id)
        if d is None:
            return
        endpoint = s.get(WebhookEndpoint, d.endpoint_id) if d.endpoint_id else None
        job = s.get(Job, d.job_id)
        kind, target, payload, event_id = d.kind, d.target, dict(d.payload), d.event_id
        secret = endpoint.secret if endpoint is not None else None
        message = _email_message(settings, target, job, payload) if kind == "email" else None
    if kind == "webhook":
        if secret is None:  # the endpoint was removed meanwhile
            ok, status, error = False, "removed", "the webhook endpoint was removed"
        else:
            a = webhooks.post(
                target, secret, event_id, payload, timestamp=now(), timeout=settings.delivery_timeout_seconds
            )
            ok, status, error = a.ok, a.status, a.error
    elif not mail.enabled(settings):
        ok, status, error = False, "no-smtp", "no SMTP server configured (TUNEFORGE_SMTP_HOST)"
    else:
        try:
            mail.send(settings, message)
            ok, status, error = True, "sent", None
        except Exception as exc:  # noqa: BLE001  any SMTP/network failure is a failed attempt
            ok, status, error = False, type(exc).__name__, str(exc)[:500]
    _record(settings, factory, delivery_id, ok, status, error)


def _record(
    settings: Settings,
    factory: sessionmaker[Session],
    delivery_id: str,
    ok: bool,
    status: str,
    error: str | None,
) -> None:
    ts = now()
    with transaction(factory) as s:
        d = s.get(Delivery, delivery_id)
        if d is None:
            return
        d.attempts += 1
        d.last_status, d.last_error, d.updated_at = status, error, ts
        if ok:
            d.status, d.delivered_at = DELIVERED, ts
            log.info(
                "delivery %s (%s %s -> %s) attempt %d: %s",
                d.id,
                d.kind,
                d.event_type,
                d.target,
                d.attempts,
                status,
            )
            return
        permanent = status in ("removed", "no-smtp")
        if permanent or d.attempts >= settings.delivery_max_attempts:
            d.status = FAILED
            log.warning(
                "delivery %s (%s %s -> %s) failed for good after %d attempt(s): %s %s",
                d.id,
                d.kind,
                d.event_type,
                d.target,
                d.attempts,
                status,
                error or "",
            )
            return
        delay = min(MAX_BACKOFF_SECONDS, math.ceil(settings.delivery_backoff_seconds * 2 ** (d.attempts - 1)))
        d.next_attempt_at = ts + max(1, delay)
        log.warning(
            "delivery %s (%s %s -> %s) attempt %d: %s; next attempt in %ds",
            d.id,
            d.kind,
            d.event_type,
            d.target,
            d.attempts,
            status,
            delay,
        )


def _email_message(settings: Settings, to: str, job: Job | None, payload: dict[str, Any]):
    job_id = payload["data"]["id"]
    status = payload["type"].rsplit(".", 1)[-1]
    lines = [f"Fine-tuning job {job_id} {status}.", ""]
    if job is not None:
        lines += [f"Model: {job.model}", f"Training file: {job.training_file}"]
        if job.fine_tuned_model:
            lines.append(f"Fine-tuned model: {job.fine_tuned_model}")
        if job.trained_tokens is not None:
            lines.append(f"Trained tokens: {job.trained_tokens}")
            job_cost = training_cost(job.trained_tokens, job.training_price)
            if job_cost is not None:
                lines.append(f"Cost: ${job_cost:.6f}")
        if job.error:
            lines.append(f"Error ({job.error.get('code')}): {job.error.get('message')}")
    return mail.compose(
        settings, to, f"[tuneforge] Fine-tuning job {job_id} {status}", "\n".join(lines) + "\n"
    )


# ---- the sender thread -------------------------------------------------------------------------
def start_sender(
    settings: Settings, factory: sessionmaker[Session], stop: threading.Event
) -> threading.Thread:
    """A daemon thread that sends due deliveries until `stop` is set (one per worker)."""

    def loop() -> None:
        while not stop.is_set():
            try:
                busy = deliver_due(settings, factory)
            except Exception:  # a DB hiccup must not end notifications for this worker's life
                log.exception("delivery pass failed")
                busy = 0
            if not busy:
                stop.wait(settings.delivery_poll_seconds)

    thread = threading.Thread(target=loop, name="tuneforge-deliveries", daemon=True)
    thread.start()
    return thread
