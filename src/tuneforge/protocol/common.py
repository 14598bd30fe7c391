"""Wire shapes shared by every endpoint: the error envelope and the cursor list envelope."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


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
        return cls(data=data, has_more=has_more, first_id=ids[0] if ids else None,
                   last_id=ids[-1] if ids else None)
