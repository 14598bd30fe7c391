"""Checkpoint permissions: a project's admin shares one of its fine-tuned models or checkpoints
with other projects (OpenAI's `checkpoint.permission`). A shared model resolves for the other
project (services/resolver.py reads this table on every call), so revoking takes effect at once.
Only the owner manages permissions; any other name is OpenAI's 404 `model_not_found`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.catalog import model_not_found
from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.ids import new_id, now
from tuneforge.protocol.fine_tuning import CheckpointPermission as Wire
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.pagination import Order, Page, paginate
from tuneforge.store.tables import CheckpointPermission, FineTunedModel, Project

ORDERS: dict[str, Order] = {"ascending": "asc", "descending": "desc"}


def permission_to_wire(row: CheckpointPermission) -> Wire:
    return Wire(id=row.id, created_at=row.created_at, project_id=row.project_id)


def _owned(session: Session, resolver: ModelResolver, project_id: str, model: str) -> FineTunedModel:
    row = resolver.owned_fine_tuned(session, project_id, model)
    if row is None:
        raise model_not_found(model, resolver.catalog(session).base_names())
    return row


def create(
    session: Session, resolver: ModelResolver, project_id: str, model: str, project_ids: list[str]
) -> list[CheckpointPermission]:
    row = _owned(session, resolver, project_id, model)
    if not project_ids:
        raise InvalidRequest("project_ids must name at least one project.", param="project_ids")
    known = set(session.scalars(select(Project.id).where(Project.id.in_(project_ids))))
    for pid in project_ids:
        if pid not in known:
            raise InvalidRequest(f"No project with id {pid}.", param="project_ids", code="invalid_project")
        if pid == project_id:
            raise InvalidRequest(f"{model} already belongs to project {pid}.", param="project_ids")
    existing = {
        p.project_id: p
        for p in session.scalars(select(CheckpointPermission).where(CheckpointPermission.model_id == row.id))
    }
    out = []
    for pid in dict.fromkeys(project_ids):  # sharing twice returns the permission there is
        if pid not in existing:
            existing[pid] = CheckpointPermission(
                id=new_id("cp_"), model_id=row.id, project_id=pid, created_at=now()
            )
            session.add(existing[pid])
        out.append(existing[pid])
    session.flush()
    return out


def list_(
    session: Session,
    resolver: ModelResolver,
    project_id: str,
    model: str,
    *,
    project: str | None = None,
    after: str | None = None,
    limit: int = 10,
    order: str = "descending",
) -> Page[CheckpointPermission]:
    row = _owned(session, resolver, project_id, model)
    if order not in ORDERS:
        raise InvalidRequest("order must be 'ascending' or 'descending'.", param="order")
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100.", param="limit")
    stmt = select(CheckpointPermission).where(CheckpointPermission.model_id == row.id)
    if project is not None:
        stmt = stmt.where(CheckpointPermission.project_id == project)
    cursor = None
    if after is not None:
        cursor = session.scalar(stmt.where(CheckpointPermission.id == after))
        if cursor is None:
            raise InvalidRequest(f"Invalid 'after': no permission {after} on {model}.", param="after")
    return paginate(
        session,
        stmt,
        sort=[CheckpointPermission.created_at, CheckpointPermission.id],
        order=ORDERS[order],
        after=cursor,
        limit=limit,
    )


def delete(session: Session, resolver: ModelResolver, project_id: str, model: str, permission_id: str) -> str:
    row = _owned(session, resolver, project_id, model)
    perm = session.scalar(
        select(CheckpointPermission).where(
            CheckpointPermission.id == permission_id, CheckpointPermission.model_id == row.id
        )
    )
    if perm is None:
        raise NotFound(f"No permission {permission_id} on {model}.", param="permission_id", code="not_found")
    session.delete(perm)
    return permission_id
