"""The expiry sweeper against a real database (SQLite and PostgreSQL) and a real blob store:
expired files lose row and bytes, live ones keep both; dead uploads lose their parts' bytes."""

from __future__ import annotations

from sqlalchemy import select, update

from tuneforge.ids import now
from tuneforge.services import files, uploads
from tuneforge.services.expiry import PART_GRACE_SECONDS, sweep_expired
from tuneforge.services.keys import get_or_create_project
from tuneforge.store.blobs import open_blobs
from tuneforge.store.db import transaction
from tuneforge.store.tables import File, Upload, UploadPart


def make_file(db, blobs, project_id, expires_after=None, purpose="fine-tune"):
    with transaction(db) as s:
        row = files.create_file_from_chunks(
            s, blobs, project_id=project_id, filename="a.jsonl", purpose=purpose, chunks=[b"{}\n"]
        )
        if expires_after is not None:
            row.expires_at = row.created_at + expires_after
        return row.id, row.blob_key, row.expires_at


def test_expired_files_lose_row_and_blob_live_ones_stay(db, settings):
    blobs = open_blobs(settings)
    with transaction(db) as s:
        pid = get_or_create_project(s, "p").id
    forever = make_file(db, blobs, pid)
    short = make_file(db, blobs, pid, expires_after=3600)
    long = make_file(db, blobs, pid, expires_after=7200)

    # Nothing has expired yet: a sweep now deletes nothing.
    assert sweep_expired(db, blobs).files == 0
    assert all(blobs.exists(key) for _, key, _ in (forever, short, long))

    swept = sweep_expired(db, blobs, at=short[2])  # the instant `short` expires
    assert swept.files == 1
    with db() as s:
        assert set(s.scalars(select(File.id))) == {forever[0], long[0]}
    assert not blobs.exists(short[1])
    assert blobs.exists(forever[1]) and blobs.exists(long[1])
    assert sweep_expired(db, blobs, at=short[2]).files == 0  # idempotent


def test_completed_upload_keeps_its_row_when_its_file_is_swept(db, settings):
    blobs = open_blobs(settings)
    with transaction(db) as s:
        pid = get_or_create_project(s, "p").id
        up = uploads.create_upload(
            s,
            settings,
            project_id=pid,
            filename="u.jsonl",
            purpose="fine-tune",
            bytes=3,
            mime_type="text/jsonl",
            expires_anchor="created_at",
            expires_seconds=3600,
        )
    with transaction(db) as s:
        part = uploads.add_part(
            s, blobs, project_id=pid, upload_id=up.id, blob=blobs.write_chunks([b"{}\n"], uploads.PART_PREFIX)
        )
    with transaction(db) as s:
        done, file = uploads.complete_upload(s, blobs, project_id=pid, upload_id=up.id, part_ids=[part.id])
        assert file.expires_at == file.created_at + 3600
        file_id, key, expires_at = file.id, file.blob_key, file.expires_at
    assert sweep_expired(db, blobs, at=expires_at).files == 1
    assert not blobs.exists(key)
    with db() as s:
        row = s.get(Upload, up.id)
        assert (row.status, row.file_id) == ("completed", None)  # ON DELETE SET NULL
        assert s.get(File, file_id) is None


def test_parts_of_cancelled_and_long_expired_uploads_are_dropped(db, settings):
    blobs = open_blobs(settings)
    with transaction(db) as s:
        pid = get_or_create_project(s, "p").id

    def upload_with_part():
        with transaction(db) as s:
            up = uploads.create_upload(
                s,
                settings,
                project_id=pid,
                filename="u.jsonl",
                purpose="fine-tune",
                bytes=10,
                mime_type="text/jsonl",
            )
        with transaction(db) as s:
            part = uploads.add_part(
                s,
                blobs,
                project_id=pid,
                upload_id=up.id,
                blob=blobs.write_chunks([b"12345"], uploads.PART_PREFIX),
            )
            return up.id, up.expires_at, part.blob_key

    live = upload_with_part()
    expired = upload_with_part()
    cancelled = upload_with_part()
    # A part that raced in while its upload was being cancelled: the row outlived the cancel.
    with transaction(db) as s:
        s.execute(update(Upload).where(Upload.id == cancelled[0]).values(status="cancelled"))

    # Just past expiry the parts stay: a `complete` that began in time may still be reading them.
    assert sweep_expired(db, blobs, at=expired[1] + 1).parts == 1  # the cancelled one only
    assert blobs.exists(expired[2]) and not blobs.exists(cancelled[2])

    with transaction(db) as s:  # `expired` expires an hour before `live` does
        s.execute(
            update(Upload).where(Upload.id == expired[0]).values(expires_at=now() - PART_GRACE_SECONDS - 1)
        )
    assert sweep_expired(db, blobs).parts == 1
    assert not blobs.exists(expired[2]) and blobs.exists(live[2])
    with db() as s:
        assert s.get(Upload, expired[0]).status == "expired"
        assert s.get(Upload, live[0]).status == "pending"
        assert set(s.scalars(select(UploadPart.upload_id))) == {live[0]}
