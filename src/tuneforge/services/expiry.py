"""The expiry sweeper: reclaims the space of what has expired.

Reads already hide expired Files (services.files) and report a pending Upload past its expiry as
`expired`; this deletes them for good: expired File rows and then their blobs, and the part blobs
of cancelled or expired Uploads. It is idempotent and cheap (an indexed scan, in batches), so every
worker runs it every Settings.expiry_sweep_seconds and the API server once at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.ids import now
from tuneforge.store.blobs import BlobStore
from tuneforge.store.db import transaction
from tuneforge.store.tables import File, Upload, UploadPart

log = logging.getLogger("tuneforge.expiry")

BATCH = 500
# A `complete` that began just before its Upload expired may still be reading the parts; an
# assembly takes minutes at most, so parts stay this long past expiry before they are dropped.
PART_GRACE_SECONDS = 3600


@dataclass
class Swept:
    files: int = 0
    parts: int = 0


def sweep_expired(factory: sessionmaker[Session], blobs: BlobStore, *, at: int | None = None) -> Swept:
    """Delete what expired before `at` (default: now). Rows go first; blobs once that committed."""
    ts = now() if at is None else at
    swept = Swept(files=_sweep_files(factory, blobs, ts), parts=_sweep_parts(factory, blobs, ts))
    if swept.files or swept.parts:
        log.info("expiry sweep: deleted %d expired file(s) and %d upload part(s)", swept.files, swept.parts)
    return swept


def _sweep_files(factory: sessionmaker[Session], blobs: BlobStore, ts: int) -> int:
    total = 0
    while True:
        with transaction(factory) as s:
            rows = s.execute(
                select(File.id, File.blob_key)
                .where(File.expires_at.is_not(None), File.expires_at <= ts)
                .limit(BATCH)
            ).all()
            if rows:
                s.execute(
                    delete(File)
                    .where(File.id.in_([r.id for r in rows]))
                    .execution_options(synchronize_session=False)
                )
        for row in rows:  # after the commit: a rolled-back delete must keep its bytes
            blobs.delete(row.blob_key)
        total += len(rows)
        if len(rows) < BATCH:
            return total


def _sweep_parts(factory: sessionmaker[Session], blobs: BlobStore, ts: int) -> int:
    expired = and_(Upload.status == "pending", Upload.expires_at <= ts - PART_GRACE_SECONDS)
    with transaction(factory) as s:
        # Record what reads already report, so that nothing can complete these uploads any more.
        s.execute(
            update(Upload)
            .where(expired)
            .values(status="expired")
            .execution_options(synchronize_session=False)
        )
    dead = select(Upload.id).where(or_(Upload.status == "cancelled", Upload.status == "expired"))
    total = 0
    while True:
        with transaction(factory) as s:
            rows = s.execute(
                select(UploadPart.id, UploadPart.blob_key).where(UploadPart.upload_id.in_(dead)).limit(BATCH)
            ).all()
            if rows:
                s.execute(
                    delete(UploadPart)
                    .where(UploadPart.id.in_([r.id for r in rows]))
                    .execution_options(synchronize_session=False)
                )
        for row in rows:
            blobs.delete(row.blob_key)
        total += len(rows)
        if len(rows) < BATCH:
            return total
