"""Domain errors. Services raise these; `api/errors.py` maps them to the OpenAI envelope.

No HTTP here: each error carries the OpenAI `type`, `param` and `code`, and a `status` the one
mapping module uses. Training and jobs reuse them for job failures (`code`, `message`, `param`).
"""

from __future__ import annotations


class TuneforgeError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(TuneforgeError):
    """A client mistake: bad parameter, bad file, illegal state change."""

    status = 400
    type = "invalid_request_error"


class NotFound(TuneforgeError):
    status = 404
    type = "invalid_request_error"


class AuthenticationFailed(TuneforgeError):
    status = 401
    type = "invalid_request_error"


class PermissionDenied(TuneforgeError):
    status = 403
    type = "invalid_request_error"


class Conflict(TuneforgeError):
    status = 409
    type = "invalid_request_error"


class TooLarge(TuneforgeError):
    status = 413
    type = "invalid_request_error"


class RateLimited(TuneforgeError):
    status = 429
    type = "requests"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int,
        param: str | None = None,
        code: str | None = "rate_limit_exceeded",
    ):
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after


class Unavailable(TuneforgeError):
    """The model's engine cannot answer now (a vLLM server starting or restarting): 503 with
    Retry-After, at once rather than a request left hanging."""

    status = 503
    type = "server_error"

    def __init__(self, message: str, *, retry_after: int, code: str | None = "engine_unavailable"):
        super().__init__(message, code=code)
        self.retry_after = retry_after
