"""Files API (openai-api.md §1): upload (streamed), list, retrieve, delete, content."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tuneforge.api.deps import Auth, Blobs, DbSession, SettingsDep
from tuneforge.api.multipart import read_multipart
from tuneforge.config import Settings
from tuneforge.errors import InvalidRequest
from tuneforge.protocol.files import FileDeleted, FileList, FileObject
from tuneforge.services import files as service
from tuneforge.store.blobs import BlobStore

router = APIRouter(prefix="/v1", tags=["files"])


@router.post("/files")
async def create_file(
    request: Request, auth: Auth, session: DbSession, settings: SettingsDep, blobs: Blobs
) -> FileObject:
    return await receive_file(request, session, settings, blobs, project_id=auth.project_id)


async def receive_file(
    request: Request, session: Session, settings: Settings, blobs: BlobStore, *, project_id: str
) -> FileObject:
    """Stream a multipart upload (`file`, `purpose`, `expires_after[...]`) into a new File.

    Shared by POST /v1/files and the dashboard's upload, so both have the same checks and limits."""
    # End the auth lookup's transaction: the body may take minutes to arrive.
    await run_in_threadpool(session.commit)

    def early_checks(fields: dict[str, str], filename: str | None) -> None:
        if "purpose" in fields:
            service.check_new_upload(fields["purpose"], filename)

    limit = settings.max_file_bytes
    form = await read_multipart(
        request,
        file_field="file",
        on_file_start=early_checks,
        writer=lambda: blobs.writer(
            service.BLOB_PREFIX, max_bytes=limit, too_large=f"File is too large: the limit is {limit} bytes."
        ),
    )
    if form.blob is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    row = await run_in_threadpool(
        service.create_uploaded_file,
        session,
        blobs,
        project_id=project_id,
        purpose=form.fields.get("purpose"),
        filename=form.filename,
        blob=form.blob,
        expires_anchor=form.fields.get("expires_after[anchor]"),
        expires_seconds=form.fields.get("expires_after[seconds]"),
    )
    return service.file_to_wire(row)


@router.get("/files")
def list_files(
    auth: Auth,
    session: DbSession,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> FileList:
    page = service.list_files(
        session, auth.project_id, purpose=purpose, limit=limit, order=order, after=after
    )
    return FileList.of(page.items, page.has_more, service.file_to_wire)


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, auth: Auth, session: DbSession) -> FileObject:
    return service.file_to_wire(service.get_file(session, auth.project_id, file_id))


@router.delete("/files/{file_id}")
def delete_file(file_id: str, auth: Auth, session: DbSession, blobs: Blobs) -> FileDeleted:
    row = service.delete_file(session, blobs, auth.project_id, file_id)
    return FileDeleted(id=row.id)


@router.get("/files/{file_id}/content")
def file_content(file_id: str, auth: Auth, session: DbSession, blobs: Blobs) -> FileResponse:
    row = service.get_file(session, auth.project_id, file_id)
    return FileResponse(
        blobs.path(row.blob_key), media_type="application/octet-stream", filename=row.filename
    )
