"""Files: register blobs as File rows, look them up within a project, list, delete.

Blobs are written first (temp file + rename) and the row second; a rolled-back transaction removes
the blob it was about to publish, and a delete removes the blob only once the row is gone for good.
So a user never sees a row without bytes, and no failed request leaves a half-written file.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Select, event, or_, select
from sqlalchemy.orm import Session

from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.ids import new_id, now
from tuneforge.protocol.files import FileObject
from tuneforge.store.blobs import Blob, BlobStore
from tuneforge.store.pagination import Order, Page, paginate
from tuneforge.store.tables import File

# What clients may upload (CreateFileRequest.purpose) ...
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# ... and every purpose a File can carry (outputs are written by the service itself).
ALL_PURPOSES = UPLOAD_PURPOSES + ("assistants_output", "batch_output", "fine-tune-results")
BATCH_DEFAULT_TTL = 30 * 24 * 3600
EXPIRES_MIN, EXPIRES_MAX = 3600, 30 * 24 * 3600
BLOB_PREFIX = "files"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def file_to_wire(row: File) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
        status_details=row.status_details,
    )


def new_file_id() -> str:
    """`file-` + 9 base-36 chars of the creation time in ms + 15 random alphanumerics.

    `created_at` has one-second resolution; with a time-ordered id, the (created_at, id) sort of
    listings keeps upload order within a second. Digits and lower case only in the time part, so
    byte order (SQLite) and locale collations (PostgreSQL) agree.
    """
    ms, digits = time.time_ns() // 1_000_000, []
    for _ in range(9):
        ms, r = divmod(ms, 36)
        digits.append(_B36[r])
    return "file-" + "".join(reversed(digits)) + new_id("", 15)


def on_outcome(
    session: Session,
    *,
    committed: Callable[[], None] | None = None,
    rolled_back: Callable[[], None] | None = None,
) -> None:
    """Run `committed` or `rolled_back` when the session's current transaction ends.

    Used for blob side effects: delete an old blob only after its row's deletion is committed;
    delete a new blob if the row that would point at it is rolled back.
    """
    pending = session.info.get("tf_outcome")
    if pending is None:
        pending = session.info["tf_outcome"] = []

        def settle(index: int) -> Callable[[Session], None]:
            def listener(_session: Session) -> None:
                callbacks = list(pending)
                pending.clear()
                for pair in callbacks:
                    if pair[index] is not None:
                        pair[index]()

            return listener

        event.listen(session, "after_commit", settle(0))
        event.listen(session, "after_rollback", settle(1))
    pending.append((committed, rolled_back))


@contextmanager
def publishing(session: Session, delete: Callable[[], None]) -> Iterator[None]:
    """The block writes the row that makes a freshly written blob visible; the blob is removed
    (`delete`) if the block fails (at once) or the transaction rolls back later. So no failed
    request leaves bytes that no row points at."""
    on_outcome(session, rolled_back=delete)
    try:
        yield
    except BaseException:
        delete()
        raise


def sanitize_filename(name: str | None) -> str:
    """The basename the client gave, fit for display. Storage never uses it (blob keys are ours)."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name).strip().lstrip(".") or "file"
    return name[:255]


def check_purpose(purpose: str | None, *, allowed: tuple[str, ...] = UPLOAD_PURPOSES) -> str:
    if not purpose:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in allowed:
        raise InvalidRequest(
            f"Invalid value for 'purpose': '{purpose}'. Supported values are: "
            + ", ".join(f"'{p}'" for p in allowed)
            + ".",
            param="purpose",
            code="invalid_value",
        )
    return purpose


def check_filename(purpose: str, filename: str) -> None:
    if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest("Invalid file format for Fine-Tuning API. Must be .jsonl", param="file")


def parse_expires_after(anchor: str | None, seconds: str | int | None) -> int | None:
    """The client's `expires_after` as a number of seconds (None when not given).

    Invalid values are a 400 naming the offending part, as OpenAI does.
    """
    if anchor is None and seconds is None:
        return None
    if anchor is None:
        raise InvalidRequest(
            "Missing required parameter: 'expires_after.anchor'.", param="expires_after.anchor"
        )
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid value for 'expires_after.anchor': must be 'created_at'.", param="expires_after.anchor"
        )
    if seconds is None:
        raise InvalidRequest(
            "Missing required parameter: 'expires_after.seconds'.", param="expires_after.seconds"
        )
    try:
        secs = int(seconds) if not isinstance(seconds, bool) else -1
    except (TypeError, ValueError):
        secs = -1
    if not EXPIRES_MIN <= secs <= EXPIRES_MAX:
        raise InvalidRequest(
            f"Invalid value for 'expires_after.seconds': must be an integer between {EXPIRES_MIN} "
            f"and {EXPIRES_MAX}.",
            param="expires_after.seconds",
        )
    return secs


def expires_after_or_default(purpose: str, expires_after: int | None) -> int | None:
    """A client file's lifetime in seconds: its `expires_after`, else 30 days for batch files."""
    if expires_after is None and purpose == "batch":
        return BATCH_DEFAULT_TTL
    return expires_after


def add_file_row(
    session: Session,
    *,
    project_id: str,
    filename: str,
    purpose: str,
    blob: Blob,
    expires_at: int | None = None,
    expires_after: int | None = None,
) -> File:
    """The File row that publishes a written blob; call it inside `publishing`, which removes the
    blob if this fails or rolls back.

    `expires_after` (seconds, anchored at the File's own `created_at`) wins over `expires_at`.
    """
    filename = sanitize_filename(filename)
    check_purpose(purpose, allowed=ALL_PURPOSES)
    check_filename(purpose, filename)
    created = now()
    if expires_after is not None:
        expires_at = created + expires_after
    row = File(
        id=new_file_id(),
        project_id=project_id,
        filename=filename,
        purpose=purpose,
        bytes=blob.bytes,
        status="processed",
        status_details=None,
        created_at=created,
        expires_at=expires_at,
        blob_key=blob.key,
    )
    session.add(row)
    session.flush()
    return row


def create_file_from_chunks(
    session: Session,
    blobs: BlobStore,
    *,
    project_id: str,
    filename: str,
    purpose: str,
    chunks: Iterable[bytes],
    expires_at: int | None = None,
    max_bytes: int | None = None,
) -> File:
    return _write_and_publish(
        session,
        blobs,
        lambda: blobs.write_chunks(chunks, BLOB_PREFIX, max_bytes=max_bytes),
        project_id=project_id,
        filename=filename,
        purpose=purpose,
        expires_at=expires_at,
    )


def create_file_from_path(
    session: Session,
    blobs: BlobStore,
    *,
    project_id: str,
    filename: str,
    purpose: str,
    src: Path,
    expires_at: int | None = None,
) -> File:
    """Copy `src` into the blob store and register it (e.g. a job's step_metrics.csv)."""
    return _write_and_publish(
        session,
        blobs,
        lambda: blobs.write_file(Path(src), BLOB_PREFIX),
        project_id=project_id,
        filename=filename,
        purpose=purpose,
        expires_at=expires_at,
    )


def _write_and_publish(
    session: Session,
    blobs: BlobStore,
    write: Callable[[], Blob],
    *,
    project_id: str,
    filename: str,
    purpose: str,
    expires_at: int | None,
) -> File:
    """A File of the bytes `write` stores; its purpose and name are checked before any are written."""
    check_purpose(purpose, allowed=ALL_PURPOSES)
    check_filename(purpose, sanitize_filename(filename))
    blob = write()
    with publishing(session, lambda: blobs.delete(blob.key)):
        return add_file_row(
            session,
            project_id=project_id,
            filename=filename,
            purpose=purpose,
            blob=blob,
            expires_at=expires_at,
        )


def _live(stmt: Select[Any], project_id: str) -> Select[Any]:
    # Expired files are gone from the user's view even before anything sweeps them.
    return stmt.where(File.project_id == project_id, or_(File.expires_at.is_(None), File.expires_at > now()))


def find_file(session: Session, project_id: str, file_id: str) -> File | None:
    row: File | None = session.scalar(_live(select(File), project_id).where(File.id == file_id))
    return row


def get_file(session: Session, project_id: str, file_id: str) -> File:
    """The File, or NotFound; another project's file is indistinguishable from a missing one."""
    row = find_file(session, project_id, file_id)
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return row


def list_files(
    session: Session,
    project_id: str,
    *,
    purpose: str | None = None,
    limit: int = 10000,
    order: Order = "desc",
    after: str | None = None,
) -> Page[File]:
    stmt = _live(select(File), project_id)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    cursor = None
    if after:
        cursor = find_file(session, project_id, after)
        if cursor is None:
            raise InvalidRequest(f"No such File object: {after}", param="after")
    return paginate(session, stmt, sort=[File.created_at, File.id], order=order, after=cursor, limit=limit)


def delete_file(session: Session, blobs: BlobStore, project_id: str, file_id: str) -> File:
    """Delete the row now and the bytes once the deletion is committed."""
    row = get_file(session, project_id, file_id)
    key = row.blob_key
    session.delete(row)
    session.flush()
    on_outcome(session, committed=lambda: blobs.delete(key))
    return row


def check_new_upload(purpose: str | None, filename: str | None) -> None:
    """The checks a client upload must pass; run as soon as both are known (before the bytes)."""
    check_filename(check_purpose(purpose), sanitize_filename(filename))


def create_uploaded_file(
    session: Session,
    blobs: BlobStore,
    *,
    project_id: str,
    purpose: str | None,
    filename: str | None,
    blob: Blob,
    expires_anchor: str | None = None,
    expires_seconds: str | None = None,
) -> File:
    """Publish a client's `POST /v1/files` upload; the blob is removed if anything is refused."""
    with publishing(session, lambda: blobs.delete(blob.key)):
        check_new_upload(purpose, filename)
        assert purpose is not None
        seconds = parse_expires_after(expires_anchor, expires_seconds)
        return add_file_row(
            session,
            project_id=project_id,
            filename=filename or "file",
            purpose=purpose,
            blob=blob,
            expires_after=expires_after_or_default(purpose, seconds),
        )
