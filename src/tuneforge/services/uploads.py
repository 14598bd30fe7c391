"""Uploads: a big file sent as parts (any order, in parallel), assembled on `complete`.

Parts are blobs of their own. `complete` concatenates them in `part_ids` order into a new blob,
streaming (constant memory), checks the declared size and optional md5, then publishes a File.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.ids import new_id, now
from tuneforge.protocol.uploads import UploadObject
from tuneforge.services import files as files_service
from tuneforge.services.files import on_outcome, publishing
from tuneforge.store.blobs import Blob, BlobStore
from tuneforge.store.tables import File, Upload, UploadPart

UPLOAD_PURPOSES = files_service.UPLOAD_PURPOSES
PART_PREFIX = "parts"


def status_of(upload: Upload) -> str:
    """Expiry is computed on read: a pending upload past `expires_at` is `expired`."""
    if upload.status == "pending" and now() >= upload.expires_at:
        return "expired"
    return upload.status


def create_upload(
    session: Session,
    settings: Settings,
    *,
    project_id: str,
    filename: str,
    purpose: str,
    bytes: int,
    mime_type: str,
    expires_anchor: str | None = None,
    expires_seconds: int | None = None,
) -> Upload:
    """A pending Upload. Its `expires_after` is kept for the File that `complete` produces (the
    Upload itself always expires after Settings.upload_ttl_seconds, as OpenAI's do after 1 hour)."""
    files_service.check_purpose(purpose, allowed=UPLOAD_PURPOSES)
    filename = files_service.sanitize_filename(filename)
    files_service.check_filename(purpose, filename)
    file_expires_after = files_service.parse_expires_after(expires_anchor, expires_seconds)
    if bytes > settings.max_upload_bytes:
        raise InvalidRequest(
            f"Invalid value for 'bytes': an Upload can be at most {settings.max_upload_bytes} bytes.",
            param="bytes",
        )
    created = now()
    row = Upload(
        id=new_id("upload_"),
        project_id=project_id,
        filename=filename,
        purpose=purpose,
        bytes=bytes,
        mime_type=mime_type,
        status="pending",
        created_at=created,
        expires_at=created + settings.upload_ttl_seconds,
        file_id=None,
        file_expires_after=file_expires_after,
    )
    session.add(row)
    session.flush()
    return row


def get_upload(session: Session, project_id: str, upload_id: str) -> Upload:
    row = session.scalar(select(Upload).where(Upload.id == upload_id, Upload.project_id == project_id))
    if row is None:
        raise NotFound(f"No such Upload object: {upload_id}", param="upload_id")
    return row


def _require_pending(upload: Upload) -> None:
    status = status_of(upload)
    if status != "pending":
        raise InvalidRequest(
            f"Upload {upload.id} is {status}; only a pending upload accepts this.",
            param="upload_id",
            code="upload_not_pending",
        )


def check_can_add_part(session: Session, project_id: str, upload_id: str) -> Upload:
    """Checked before the part's bytes are read, so a dead upload does not cost a 64 MB transfer."""
    upload = get_upload(session, project_id, upload_id)
    _require_pending(upload)
    return upload


def add_part(
    session: Session, blobs: BlobStore, *, project_id: str, upload_id: str, blob: Blob
) -> UploadPart:
    with publishing(session, lambda: blobs.delete(blob.key)):
        upload = get_upload(session, project_id, upload_id)
        _require_pending(upload)  # again: it may have been cancelled while the part streamed in
        part = UploadPart(
            id=new_id("part_"), upload_id=upload.id, bytes=blob.bytes, created_at=now(), blob_key=blob.key
        )
        session.add(part)
        session.flush()
    return part


def complete_upload(
    session: Session,
    blobs: BlobStore,
    *,
    project_id: str,
    upload_id: str,
    part_ids: list[str],
    md5: str | None = None,
) -> tuple[Upload, File]:
    upload = get_upload(session, project_id, upload_id)
    _require_pending(upload)
    if len(set(part_ids)) != len(part_ids):
        raise InvalidRequest(
            "Invalid value for 'part_ids': a part is listed more than once.", param="part_ids"
        )
    parts = {
        p.id: p
        for p in session.scalars(
            select(UploadPart).where(UploadPart.upload_id == upload.id, UploadPart.id.in_(part_ids))
        )
    }
    missing = [pid for pid in part_ids if pid not in parts]
    if missing:
        raise InvalidRequest(
            f"Invalid value for 'part_ids': no such part for this upload: {missing[0]}", param="part_ids"
        )
    total = sum(parts[pid].bytes for pid in part_ids)
    if total != upload.bytes:
        raise InvalidRequest(
            f"The upload was created with bytes={upload.bytes}, but the parts "
            f"listed add up to {total} bytes.",
            param="part_ids",
        )

    # Assemble before touching the row: on SQLite a write would hold the lock for the whole copy.
    chunks = (chunk for pid in part_ids for chunk in blobs.iter_chunks(parts[pid].blob_key))
    blob = blobs.write_chunks(chunks, files_service.BLOB_PREFIX)
    with publishing(session, lambda: blobs.delete(blob.key)):
        if md5 is not None and md5.lower() != blob.md5:
            raise InvalidRequest(
                f"The md5 checksum of the assembled file ({blob.md5}) does not match the md5 given ({md5}).",
                param="md5",
            )
        lifetime = files_service.expires_after_or_default(upload.purpose, upload.file_expires_after)
        file = files_service.add_file_row(
            session,
            project_id=project_id,
            filename=upload.filename,
            purpose=upload.purpose,
            blob=blob,
            expires_after=lifetime,
        )
    # The conditional update makes two concurrent completes produce exactly one File.
    result = session.execute(
        update(Upload)
        .where(Upload.id == upload.id, Upload.status == "pending")
        .values(status="completed", file_id=file.id)
    )
    claimed = result.rowcount  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
    if claimed != 1:
        raise InvalidRequest(
            f"Upload {upload.id} is no longer pending.", param="upload_id", code="upload_not_pending"
        )
    session.refresh(upload)
    _drop_parts(session, blobs, upload.id)
    return upload, file


def cancel_upload(session: Session, blobs: BlobStore, *, project_id: str, upload_id: str) -> Upload:
    upload = get_upload(session, project_id, upload_id)
    _require_pending(upload)
    upload.status = "cancelled"
    session.flush()
    _drop_parts(session, blobs, upload.id)
    return upload


def _drop_parts(session: Session, blobs: BlobStore, upload_id: str) -> None:
    parts = list(session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id)))
    keys = [p.blob_key for p in parts]
    for p in parts:
        session.delete(p)
    session.flush()

    def delete_blobs() -> None:
        for k in keys:
            blobs.delete(k)

    on_outcome(session, committed=delete_blobs)


def upload_to_wire(row: Upload, file: File | None = None) -> UploadObject:
    return UploadObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
        status=status_of(row),
        file=files_service.file_to_wire(file) if file is not None else None,
    )
