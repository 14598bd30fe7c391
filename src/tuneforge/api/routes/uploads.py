"""Uploads API (openai-api.md §1.6): create, add parts (streamed), complete, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tuneforge.api.deps import Auth, Blobs, DbSession, SettingsDep
from tuneforge.api.multipart import read_multipart
from tuneforge.errors import InvalidRequest
from tuneforge.protocol.uploads import (
    CompleteUploadRequest,
    CreateUploadRequest,
    UploadObject,
    UploadPartObject,
)
from tuneforge.services import uploads as service

router = APIRouter(prefix="/v1", tags=["uploads"])


def _expires_after(body: CreateUploadRequest) -> dict:
    ea = body.expires_after
    return {} if ea is None else {"expires_anchor": ea.anchor, "expires_seconds": ea.seconds}


@router.post("/uploads")
def create_upload(
    body: CreateUploadRequest, auth: Auth, session: DbSession, settings: SettingsDep
) -> UploadObject:
    row = service.create_upload(
        session,
        settings,
        project_id=auth.project_id,
        filename=body.filename,
        purpose=body.purpose,
        bytes=body.bytes,
        mime_type=body.mime_type,
        **_expires_after(body),
    )
    return service.upload_to_wire(row)


@router.post("/uploads/{upload_id}/parts")
async def add_part(
    upload_id: str, request: Request, auth: Auth, session: DbSession, settings: SettingsDep, blobs: Blobs
) -> UploadPartObject:
    await run_in_threadpool(service.check_can_add_part, session, auth.project_id, upload_id)
    await run_in_threadpool(session.commit)  # no transaction open while the part streams in
    limit = settings.max_part_bytes
    form = await read_multipart(
        request,
        file_field="data",
        writer=lambda: blobs.writer(
            service.PART_PREFIX,
            max_bytes=limit,
            too_large=f"Upload part is too large: the limit is {limit} bytes.",
        ),
    )
    if form.blob is None:
        raise InvalidRequest("Missing required parameter: 'data'.", param="data")
    part = await run_in_threadpool(
        service.add_part, session, blobs, project_id=auth.project_id, upload_id=upload_id, blob=form.blob
    )
    return UploadPartObject(id=part.id, created_at=part.created_at, upload_id=part.upload_id)


@router.post("/uploads/{upload_id}/complete")
def complete_upload(
    upload_id: str, body: CompleteUploadRequest, auth: Auth, session: DbSession, blobs: Blobs
) -> UploadObject:
    row, file = service.complete_upload(
        session, blobs, project_id=auth.project_id, upload_id=upload_id, part_ids=body.part_ids, md5=body.md5
    )
    return service.upload_to_wire(row, file)


@router.post("/uploads/{upload_id}/cancel")
def cancel_upload(upload_id: str, auth: Auth, session: DbSession, blobs: Blobs) -> UploadObject:
    return service.upload_to_wire(
        service.cancel_upload(session, blobs, project_id=auth.project_id, upload_id=upload_id)
    )
