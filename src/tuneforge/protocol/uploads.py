"""Uploads API wire shapes (openai-api.md §1.6)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tuneforge.protocol.common import SafeStr
from tuneforge.protocol.files import FileObject


class ExpiresAfter(BaseModel):
    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2592000)


class CreateUploadRequest(BaseModel):
    filename: SafeStr = Field(min_length=1, max_length=512)
    purpose: SafeStr
    bytes: int = Field(ge=0)
    mime_type: SafeStr = Field(min_length=1, max_length=128)
    expires_after: ExpiresAfter | None = None


class CompleteUploadRequest(BaseModel):
    part_ids: list[SafeStr]
    md5: SafeStr | None = None


class UploadObject(BaseModel):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: FileObject | None = None


class UploadPartObject(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str
