"""File expiry through a real `tuneforge serve` (with its worker) and the strict openai SDK:
`expires_after` sets `expires_at`; an expired file is a 404 at once and its bytes are deleted by
the worker's periodic sweep."""

from __future__ import annotations

import hashlib
import io
import time

import openai
import pytest
from sqlalchemy import create_engine, update

from tuneforge.ids import now
from tuneforge.store.tables import File

LINES = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'


@pytest.fixture(scope="module")
def sweeping_server(server_factory):
    # One worker (the serve default), sweeping every half second instead of every 5 minutes.
    return server_factory({"TUNEFORGE_WORKERS": "1", "TUNEFORGE_EXPIRY_SWEEP_SECONDS": "0.5"})


def file_blobs(server) -> set[str]:
    root = server.data_dir / "blobs" / "files"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def backdate(server, file_id: str) -> None:
    """Move the file's expiry into the past, as if its hour had passed."""
    engine = create_engine(f"sqlite:///{server.data_dir / 'tuneforge.db'}")
    try:
        with engine.begin() as conn:
            assert (
                conn.execute(update(File).where(File.id == file_id).values(expires_at=now() - 1)).rowcount
                == 1
            )
    finally:
        engine.dispose()


def test_expires_after_then_expired_file_is_404_and_swept(sweeping_server):
    c = sweeping_server.client(sweeping_server.create_key("expiry"))
    f = c.files.create(
        file=("train.jsonl", io.BytesIO(LINES)),
        purpose="fine-tune",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.expires_at == f.created_at + 3600
    assert c.files.retrieve(f.id).expires_at == f.expires_at
    keep = c.files.create(file=("keep.jsonl", io.BytesIO(LINES)), purpose="fine-tune")
    assert keep.expires_at is None
    assert len(file_blobs(sweeping_server)) == 2

    with pytest.raises(openai.BadRequestError) as exc:
        c.files.create(
            file=("x.jsonl", io.BytesIO(LINES)),
            purpose="fine-tune",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert exc.value.param == "expires_after.seconds"

    backdate(sweeping_server, f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)
    assert [x.id for x in c.files.list()] == [keep.id]

    deadline = time.monotonic() + 20
    while len(file_blobs(sweeping_server)) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(file_blobs(sweeping_server)) == 1, "the worker did not sweep the expired file"
    assert c.files.content(keep.id).read() == LINES
    assert "expiry sweep: deleted 1 expired file(s)" in sweeping_server.log()


def test_upload_expires_after_applies_to_its_file(sweeping_server):
    c = sweeping_server.client(sweeping_server.create_key("expiry-uploads"))
    data = LINES * 10
    up = c.uploads.create(
        bytes=len(data),
        filename="big.jsonl",
        mime_type="text/jsonl",
        purpose="fine-tune",
        expires_after={"anchor": "created_at", "seconds": 86400},
    )
    part = c.uploads.parts.create(up.id, data=data)
    done = c.uploads.complete(up.id, part_ids=[part.id], md5=hashlib.md5(data).hexdigest())
    assert done.file is not None
    assert done.file.expires_at == done.file.created_at + 86400
    assert c.files.retrieve(done.file.id).expires_at == done.file.expires_at
