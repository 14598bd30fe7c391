"""Webhook endpoints: register (with a new signing secret), list, remove. Sending is the outbox's."""

from __future__ import annotations

from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.ids import new_id, now
from tuneforge.integrations.webhooks import JOB_EVENTS, new_secret
from tuneforge.services.keys import get_or_create_project
from tuneforge.store.tables import Delivery, Project, WebhookEndpoint


def add_endpoint(
    session: Session, url: str, *, project: str | None = None, events: list[str] | None = None
) -> WebhookEndpoint:
    """A new endpoint for `project` (every project when None); `events` default to all job events."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidRequest(f"Invalid webhook URL {url!r}: expected http(s)://host/path.", param="url")
    chosen = list(dict.fromkeys(events)) if events else list(JOB_EVENTS)
    unknown = [e for e in chosen if e not in JOB_EVENTS]
    if unknown:
        raise InvalidRequest(
            f"Unknown event type(s) {', '.join(unknown)}; expected some of {', '.join(JOB_EVENTS)}.",
            param="events",
        )
    project_id = get_or_create_project(session, project).id if project else None
    endpoint = WebhookEndpoint(
        id=new_id("we_"), project_id=project_id, url=url, secret=new_secret(), events=chosen, created_at=now()
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def list_endpoints(session: Session) -> list[tuple[WebhookEndpoint, str | None]]:
    rows = session.execute(
        select(WebhookEndpoint, Project.name)
        .outerjoin(Project, Project.id == WebhookEndpoint.project_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return [(endpoint, name) for endpoint, name in rows]


def remove_endpoint(session: Session, endpoint_id: str) -> None:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"No such webhook endpoint: {endpoint_id}", param="id")
    session.delete(endpoint)


def deliveries(session: Session, limit: int = 50) -> list[Delivery]:
    """The newest deliveries (webhooks and e-mails) with their attempt counts and last status."""
    return list(
        session.scalars(select(Delivery).order_by(Delivery.created_at.desc(), Delivery.id).limit(limit))
    )
