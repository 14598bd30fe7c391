"""Request-scoped dependencies: settings, blob store, model resolver, one DB session, the
authenticated caller, the serving engine holder. Shared by the API routers and the dashboard
(`ui/`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.errors import AuthenticationFailed, PermissionDenied
from tuneforge.inference.holder import Serving
from tuneforge.services.keys import Principal, authenticate
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import BlobStore

__all__ = [
    "Admin",
    "Auth",
    "Blobs",
    "DbSession",
    "Principal",
    "Resolver",
    "ServingDep",
    "SettingsDep",
    "get_serving",
]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


def _resolver(request: Request) -> ModelResolver:
    return request.app.state.resolver


def _session(request: Request) -> Iterator[Session]:
    """One session per request: committed when the handler returns, rolled back if it raises."""
    with request.app.state.sessionmaker() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_serving(request: Request) -> Serving:
    """The app's serving holder (inference engine created on first use)."""
    serving = getattr(request.app.state, "serving", None)
    if serving is None:  # an app built without the lifespan hook (kept lazy and cheap)
        serving = request.app.state.serving = Serving(request.app.state.settings)
    return serving


SettingsDep = Annotated[Settings, Depends(_settings)]
ServingDep = Annotated[Serving, Depends(get_serving)]
Blobs = Annotated[BlobStore, Depends(_blobs)]
# What a model name means for a project (base, alias, GGUF, stored base, ft: model, checkpoint).
Resolver = Annotated[ModelResolver, Depends(_resolver)]
# scope="function": commit before the response is sent, so a client never reads an id it cannot
# fetch back, and a failed commit is still reported as an error.
DbSession = Annotated[Session, Depends(_session, scope="function")]


def _redact(secret: str) -> str:
    return secret[:6] + "*" * 4 + secret[-4:] if len(secret) > 12 else "*" * len(secret)


def _principal(session: DbSession, authorization: Annotated[str | None, Header()] = None) -> Principal:
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthenticationFailed(
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with "
            "`tuneforge keys create`.",
            code="invalid_api_key",
        )
    principal = authenticate(session, secret)
    if principal is None:
        raise AuthenticationFailed(
            f"Incorrect API key provided: {_redact(secret)}. Create a key with "
            "`tuneforge keys create --project NAME`.",
            code="invalid_api_key",
        )
    return principal


Auth = Annotated[Principal, Depends(_principal)]


def _admin(principal: Auth) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("This operation needs an admin API key.", code="insufficient_permissions")
    return principal


Admin = Annotated[Principal, Depends(_admin)]
