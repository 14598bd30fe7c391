"""Per-key rate limits for the /v1 API, as ASGI middleware (one place; see services/ratelimit.py).

A refused request gets OpenAI's 429: `{"error": {"type": "requests" | "tokens",
"code": "rate_limit_exceeded", ...}}` with `Retry-After` (seconds) and `retry-after-ms`, which
the openai SDK waits for before its automatic retry. Keys are told apart by the SHA-256 of the
bearer secret, so the secret itself is never kept.
"""

from __future__ import annotations

import hashlib

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tuneforge.api.errors import envelope
from tuneforge.config import Settings
from tuneforge.services.ratelimit import RateLimiter, make_limiter, retry_after_headers

_UNITS = {"requests": "requests per minute (RPM)", "tokens": "tokens per minute (TPM)"}


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: RateLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, secret = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not secret.strip():
            await self.app(scope, receive, send)  # unauthenticated: the 401 comes from auth
            return
        key = hashlib.sha256(secret.strip()).hexdigest()
        if self.limiter.blocking:  # shared through Redis: a round trip, off the event loop
            refusal = await run_in_threadpool(self.limiter.acquire, key)
        else:
            refusal = self.limiter.acquire(key)
        if refusal is not None:
            wait = max(1, round(refusal.retry_after))
            response = envelope(
                429,
                f"Rate limit reached for {_UNITS[refusal.kind]} on this API key: limit "
                f"{refusal.limit}. Please try again in {wait}s.",
                type=refusal.kind,
                code="rate_limit_exceeded",
                headers=retry_after_headers(refusal.retry_after),
            )
            await response(scope, receive, send)
            return
        token = self.limiter.bind(key)
        try:
            await self.app(scope, receive, send)
        finally:
            self.limiter.unbind(token)


def install_rate_limits(app: FastAPI, settings: Settings) -> None:
    """Mount the limiter when Settings.rate_limit_rpm / rate_limit_tpm set a limit (off by default);
    shared by every API process through Redis when Settings.redis_url is set."""
    limiter = make_limiter(settings)
    app.state.rate_limiter = limiter
    if limiter.enabled:
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
