"""Wire shapes shared by every endpoint: the error envelope, the cursor list envelope, and an
event of a streamed response."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel

T = TypeVar("T")


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it as a client mistake instead of failing in the DB.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A string field that may reach the database: use it in every request model.
SafeStr = Annotated[str, AfterValidator(_no_nul)]


class StreamEvent(BaseModel):
    """A wire object that a streamed response (`stream: true`) sends as one server-sent event."""

    def sse(self) -> str:
        return f"data: {self.model_dump_json()}\n\n"


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ListResponse(BaseModel, Generic[T]):
    """`{"object": "list", "data": [...], "has_more", "first_id", "last_id"}` (SDK SyncCursorPage).

    The SDK keeps paging while `has_more` is true, sending `after=<last id>`; always send it.
    """

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, items: Sequence[Any], has_more: bool, convert: Callable[[Any], T]) -> ListResponse[T]:
        data = [convert(item) for item in items]
        ids = [getattr(d, "id", None) for d in data]
        return cls(
            data=data, has_more=has_more, first_id=ids[0] if ids else None, last_id=ids[-1] if ids else None
        )
