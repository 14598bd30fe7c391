"""Operator health check: the process is up and the database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from tuneforge.api.deps import DbSession

router = APIRouter(tags=["health"])


@router.get("/health")
def health(session: DbSession) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    return {"status": "ok"}
