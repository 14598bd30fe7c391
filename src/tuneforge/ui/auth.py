"""Dashboard sign-in: an API key is exchanged once for an opaque session cookie.

The cookie holds 256 random bits; the database keeps only their SHA-256 and the key they stand
for, never the key itself. So the key never sits in the browser after sign-in, a stolen database
yields no usable cookie, and revoking the key (or signing out) ends the session on the next request.
The cookie is HttpOnly, SameSite=Lax, and Secure when the page is served over https.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.api.deps import DbSession
from tuneforge.errors import AuthenticationFailed, PermissionDenied
from tuneforge.ids import now
from tuneforge.services.keys import Principal, authenticate
from tuneforge.store.tables import ApiKey, Project, UiSession

COOKIE = "tuneforge_session"
SESSION_SECONDS = 7 * 24 * 3600


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(session: Session, secret: str) -> tuple[str, Principal]:
    """A new session for the API key `secret` -> (cookie token, who it is)."""
    principal = authenticate(session, secret.strip()) if secret and secret.strip() else None
    if principal is None:
        # plain text: the login page shows it as is (no Markdown there)
        raise AuthenticationFailed(
            "That API key is not valid (or was revoked). Create one on "
            "the server with: tuneforge keys create --project NAME",
            param="api_key",
            code="invalid_api_key",
        )
    token = secrets.token_urlsafe(32)
    ts = now()
    session.execute(delete(UiSession).where(UiSession.expires_at < ts))  # keep the table small
    session.add(
        UiSession(id=_digest(token), key_id=principal.key_id, created_at=ts, expires_at=ts + SESSION_SECONDS)
    )
    session.flush()
    return token, principal


def principal_for(session: Session, token: str | None) -> Principal | None:
    if not token:
        return None
    row = session.execute(
        select(ApiKey, Project)
        .join(UiSession, UiSession.key_id == ApiKey.id)
        .join(Project, Project.id == ApiKey.project_id)
        .where(UiSession.id == _digest(token), UiSession.expires_at > now(), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Principal.of(*row)


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(UiSession).where(UiSession.id == _digest(token)))


def set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/ui")


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # browsers send Origin on every cross-site POST
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _ui_principal(request: Request, session: DbSession) -> Principal:
    principal = principal_for(session, request.cookies.get(COOKIE))
    if principal is None:
        raise AuthenticationFailed("Sign in with an API key to use the dashboard.", code="not_signed_in")
    # SameSite=Lax already keeps the cookie off cross-site POSTs; refuse them explicitly too.
    if request.method not in ("GET", "HEAD") and not _same_origin(request):
        raise PermissionDenied("Cross-origin requests are not allowed.", code="bad_origin")
    return principal


UiUser = Annotated[Principal, Depends(_ui_principal)]
