"""Request ids and access logs, as plain ASGI middleware (so streamed bodies are not buffered).

Every response carries `x-request-id` (the client's, if it sent one; the SDK exposes it as
`.request_id`). Each request is logged once, key=value, with method, path, status and duration.
An exception that escapes a handler becomes the 500 envelope here, logged with the request id.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.errors import envelope, server_error
from tuneforge.ids import new_id

log = logging.getLogger("tuneforge.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else new_id("req_", 32)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
                # NUL is never meaningful in an id or filter, and PostgreSQL text cannot hold it.
                await envelope(400, "The request URL must not contain NUL characters.")(
                    scope, receive, send_with_id
                )
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error request_id=%s method=%s path=%s", request_id, scope["method"], scope["path"]
            )
            if status == 0:  # nothing sent yet: answer with the envelope instead of a bare 500
                await server_error()(scope, receive, send_with_id)
            status = status or 500
        finally:
            log.info(
                "request_id=%s method=%s path=%r status=%s duration_ms=%.1f",
                request_id,
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )
