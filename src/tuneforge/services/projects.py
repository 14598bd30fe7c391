"""Per-project operator settings, kept in `projects.settings` (JSON):

- `notify_email`: where a job-finished e-mail goes (needs TUNEFORGE_SMTP_HOST);
- `screening`: false turns training-data screening off for the project (default on).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import InvalidRequest
from tuneforge.services.keys import get_or_create_project
from tuneforge.store.tables import Project

_UNSET = object()


def update_settings(
    session: Session, project: str, *, notify_email: Any = _UNSET, screening: Any = _UNSET
) -> Project:
    """Change the given settings (notify_email=None removes the address)."""
    row = get_or_create_project(session, project)
    settings = dict(row.settings or {})
    if notify_email is not _UNSET:
        if notify_email is None:
            settings.pop("notify_email", None)
        elif "@" not in notify_email or any(c.isspace() for c in notify_email):
            raise InvalidRequest(f"Invalid e-mail address {notify_email!r}.", param="notify_email")
        else:
            settings["notify_email"] = notify_email
    if screening is not _UNSET:
        settings["screening"] = bool(screening)
    row.settings = settings  # a new dict: JSON columns only notice reassignment
    return row


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.created_at, Project.id)))
