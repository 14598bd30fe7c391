"""Checkpoint permissions (openai-api.md §4.3): admin keys share a fine-tuned model or checkpoint
with other projects. parse -> services/permissions.py -> protocol model."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from tuneforge.api.deps import Admin, DbSession, Resolver
from tuneforge.protocol.fine_tuning import (
    CheckpointPermissionDeleted,
    CheckpointPermissionList,
    CreateCheckpointPermissionRequest,
)
from tuneforge.services import permissions as service

router = APIRouter(prefix="/v1/fine_tuning/checkpoints", tags=["fine-tuning"])


def _page(rows, has_more: bool = False) -> CheckpointPermissionList:
    return CheckpointPermissionList.of(rows, has_more, service.permission_to_wire)


@router.post("/{checkpoint}/permissions")
def create_permissions(
    checkpoint: str,
    body: CreateCheckpointPermissionRequest,
    admin: Admin,
    session: DbSession,
    resolver: Resolver,
) -> CheckpointPermissionList:
    return _page(service.create(session, resolver, admin.project_id, checkpoint, body.project_ids))


@router.get("/{checkpoint}/permissions")
def list_permissions(
    checkpoint: str,
    admin: Admin,
    session: DbSession,
    resolver: Resolver,
    project_id: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query()] = 10,
    order: Literal["ascending", "descending"] = "descending",
) -> CheckpointPermissionList:
    page = service.list_(
        session,
        resolver,
        admin.project_id,
        checkpoint,
        project=project_id,
        after=after,
        limit=limit,
        order=order,
    )
    return _page(page.items, page.has_more)


@router.delete("/{checkpoint}/permissions/{permission_id}")
def delete_permission(
    checkpoint: str, permission_id: str, admin: Admin, session: DbSession, resolver: Resolver
) -> CheckpointPermissionDeleted:
    return CheckpointPermissionDeleted(
        id=service.delete(session, resolver, admin.project_id, checkpoint, permission_id)
    )
