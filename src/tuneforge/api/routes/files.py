"""Files API (openai-api.md §1): upload (streamed), list, retrieve, delete, content."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tuneforge.api.deps import Auth, Blobs, DbSession, SettingsDep
from tuneforge.api.multipart import read_multipart
from tuneforge.config import Settings
from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.protocol.files import FileDeleted, FileList, FileObject
from tuneforge.services import files as service
from tuneforge.store.blobs import BlobStore
from tuneforge.store.tables import File

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
def file_content(file_id: str, auth: Auth, session: DbSession, blobs: Blobs) -> StreamingResponse:
    return download(blobs, service.get_file(session, auth.project_id, file_id))


def download(blobs: BlobStore, row: File) -> StreamingResponse:
    """The file's bytes streamed from the blob store in 1 MiB chunks (constant memory), as an
    attachment named like the file. Shared with the dashboard's download."""
    chunks = iter(blobs.iter_chunks(row.blob_key))
    try:  # the first read happens here, so a vanished blob is a 404, not a broken stream
        first = next(chunks, b"")
    except FileNotFoundError:
        raise NotFound(f"No such File object: {row.id}", param="id") from None

    def body():
        yield first
        yield from chunks

    quoted = quote(row.filename)
    disposition = (
        f'attachment; filename="{row.filename}"'
        if quoted == row.filename
        else f"attachment; filename*=utf-8''{quoted}"
    )
    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"content-disposition": disposition, "content-length": str(row.bytes)},
    )
