"""The one place where errors become HTTP: every error leaves as the OpenAI envelope.

`{"error": {"message", "type", "param", "code"}}` with the right status, for domain errors,
request validation (400, never FastAPI's 422 `detail`), unknown routes (404), wrong methods
(405), and, from the middleware, anything unexpected (500 `server_error`, logged with the request id).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.errors import RateLimited, TuneforgeError, Unavailable

INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you "
    "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
    "but what was sent was not valid JSON.)"
)


def envelope(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def server_error() -> JSONResponse:
    return envelope(
        500, "The server had an error while processing your request. Sorry about that!", type="server_error"
    )


async def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TuneforgeError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, (RateLimited, Unavailable)) else None
    return envelope(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code, headers=headers)


def _param(loc: tuple[Any, ...]) -> str | None:
    # loc is ("body", "part_ids", 0) / ("query", "limit"): drop the source, keep the field path.
    parts = (
        [str(p) for p in loc[1:]]
        if loc and loc[0] in ("body", "query", "path", "header")
        else [str(p) for p in loc]
    )
    return ".".join(parts) or None


def validation_message(err: dict[str, Any]) -> tuple[str, str | None]:
    param = _param(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "json_invalid":
        return INVALID_JSON, None
    if kind == "missing":
        if param is None:  # the whole body is missing
            return "You must provide a JSON body with this request.", None
        return f"Missing required parameter: '{param}'.", param
    msg = str(err.get("msg", "is invalid")).rstrip(".")
    if param is None:
        return f"Invalid request body: {msg}.", None
    return f"Invalid value for '{param}': {msg}.", param


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    message, param = validation_message(errors[0]) if errors else ("Invalid request.", None)
    return envelope(400, message, param=param)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
        if _under_v1(request):
            message += (
                f". Did you mean /v1{request.url.path}? The base URL ends in /v1, "
                f'e.g. OpenAI(base_url="{request.base_url}v1").'
            )
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}"
    else:
        message = str(exc.detail)
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    return envelope(exc.status_code, message, type=kind, headers=getattr(exc, "headers", None))


def _under_v1(request: Request) -> bool:
    """Whether the path exists below /v1: the client's base URL lacks its /v1."""
    from starlette.routing import Match

    path = request.url.path
    if path.startswith("/v1/") or path == "/v1":
        return False
    scope = {**request.scope, "path": "/v1" + path}
    return any(route.matches(scope)[0] != Match.NONE for route in request.app.routes)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TuneforgeError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
