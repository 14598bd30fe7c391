"""Projects and API keys: create, authenticate, list, revoke.

Secrets are `sk-tf-` + 40 random alphanumerics (~238 bits) and only their SHA-256 is stored.
A slow password hash (bcrypt, argon2) protects low-entropy human passwords against guessing;
a uniformly random 238-bit secret cannot be guessed, so a fast hash loses nothing and lets every
request authenticate with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound
from tuneforge.ids import new_id, now
from tuneforge.store.tables import ApiKey, Project

SECRET_PREFIX = "sk-tf-"
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Principal:
    """Who is calling: every object a request touches is scoped to `project_id`."""

    project_id: str
    organization_id: str
    key_id: str
    is_admin: bool
    project_name: str

    @classmethod
    def of(cls, key: ApiKey, project: Project) -> Principal:
        return cls(
            project_id=project.id,
            organization_id=project.organization_id,
            key_id=key.id,
            is_admin=key.is_admin,
            project_name=project.name,
        )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(
            id=new_id("proj_"), name=name, organization_id=new_id("org-"), created_at=now(), settings={}
        )
        session.add(project)
        session.flush()
    return project


def create_key(
    session: Session, project_name: str = "default", *, admin: bool = False, name: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for `project_name` (created if missing). Returns the row and the one-time secret."""
    project = get_or_create_project(session, project_name)
    secret = SECRET_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))
    key = ApiKey(
        id=new_id("key_"),
        project_id=project.id,
        name=name,
        secret_hash=hash_secret(secret),
        redacted=f"{secret[:8]}…{secret[-4:]}",
        is_admin=admin,
        created_at=now(),
        revoked_at=None,
    )
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> Principal | None:
    row = session.execute(
        select(ApiKey, Project)
        .join(Project, Project.id == ApiKey.project_id)
        .where(ApiKey.secret_hash == hash_secret(secret), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Principal.of(*row)


def any_keys(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def list_keys(session: Session, project_name: str | None = None) -> list[tuple[ApiKey, Project]]:
    stmt = (
        select(ApiKey, Project)
        .join(Project, Project.id == ApiKey.project_id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    if project_name is not None:
        stmt = stmt.where(Project.name == project_name)
    return [(k, p) for k, p in session.execute(stmt)]


def revoke_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No such API key: {key_id}", param="id")
    if key.revoked_at is None:
        key.revoked_at = now()
    return key
