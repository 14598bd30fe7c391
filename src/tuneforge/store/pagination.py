"""Keyset (cursor) pagination shared by every list endpoint: files, jobs, events, checkpoints.

`after` is the row the previous page ended on; the next page is the rows strictly after it in the
current sort order. Keyset pages stay correct while rows are inserted and cost one index range scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

T = TypeVar("T")
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


def paginate(
    session: Session,
    stmt: Select[Any],
    *,
    sort: Sequence[Any],
    order: Order = "desc",
    after: Any = None,
    limit: int = 20,
) -> Page[Any]:
    """Run `stmt` (a select of one ORM entity) ordered by `sort` columns, one page long.

    `sort` must end in a unique column (e.g. `[File.created_at, File.id]`) so the order is total.
    `after` is the ORM row of the cursor (or None for the first page); its values for the `sort`
    columns are read by attribute name.
    """
    if after is not None:
        cursor = tuple(getattr(after, col.key) for col in sort)
        cols, vals = tuple_(*sort), tuple_(*cursor)
        stmt = stmt.where(cols > vals if order == "asc" else cols < vals)
    stmt = stmt.order_by(*(col.asc() if order == "asc" else col.desc() for col in sort))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
