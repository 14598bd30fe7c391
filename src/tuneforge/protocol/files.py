"""Files API wire shapes (openai-api.md §1)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from tuneforge.protocol.common import ListResponse


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


FileList = ListResponse[FileObject]
