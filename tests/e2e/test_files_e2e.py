"""Files and Uploads through a real `tuneforge serve`, with the real openai SDK in strict mode."""

from __future__ import annotations

import hashlib
import io
import secrets
import signal

import httpx
import openai
import pytest

LINES = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'


def project_client(server):
    """A client of a fresh project, so listings only see this test's files."""
    return server.client(server.create_key(f"p-{secrets.token_hex(4)}"))


def test_upload_retrieve_content_delete(server):
    c = project_client(server)
    f = c.files.create(file=("train.jsonl", io.BytesIO(LINES * 3)), purpose="fine-tune")
    assert f.id.startswith("file-") and f.object == "file"
    assert (f.bytes, f.filename, f.purpose, f.status) == (
        len(LINES) * 3,
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    assert isinstance(f.created_at, int)
    assert c.files.retrieve(f.id) == f
    assert c.files.content(f.id).read() == LINES * 3

    deleted = c.files.delete(f.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (f.id, True, "file")
    with pytest.raises(openai.NotFoundError) as exc:
        c.files.retrieve(f.id)
    assert exc.value.body == {
        "message": f"No such File object: {f.id}",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.delete(f.id)
    assert list(c.files.list()) == []


def test_list_auto_paginates_in_both_orders(server):
    c = project_client(server)
    ids = [c.files.create(file=(f"f{i}.jsonl", io.BytesIO(LINES)), purpose="fine-tune").id for i in range(5)]
    c.files.create(file=("notes.txt", io.BytesIO(b"x")), purpose="assistants")

    asc = [f.id for f in c.files.list(purpose="fine-tune", limit=1, order="asc")]
    assert asc == ids  # upload order, even within one second (time-ordered ids break ties)
    desc = [f.id for f in c.files.list(purpose="fine-tune", limit=1, order="desc")]
    assert desc == list(reversed(asc))
    page = c.files.list(limit=2)
    assert len(page.data) == 2 and page.has_more is True
    assert len(list(c.files.list())) == 6


def test_uploads_two_parts_become_a_file(server):
    c = project_client(server)
    data = LINES * 1000
    half = len(data) // 2
    up = c.uploads.create(bytes=len(data), filename="big.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    assert up.id.startswith("upload_") and up.status == "pending" and up.file is None
    assert up.expires_at - up.created_at == 3600
    second = c.uploads.parts.create(up.id, data=data[half:])  # parts may arrive in any order
    first = c.uploads.parts.create(up.id, data=data[:half])
    assert first.object == "upload.part" and first.upload_id == up.id
    done = c.uploads.complete(up.id, part_ids=[first.id, second.id], md5=hashlib.md5(data).hexdigest())
    assert done.status == "completed" and done.file is not None
    assert done.file.bytes == len(data) and done.file.filename == "big.jsonl"
    assert c.files.content(done.file.id).read() == data
    with pytest.raises(openai.BadRequestError):
        c.uploads.parts.create(up.id, data=b"late")


def test_upload_cancel_and_size_mismatch(server):
    c = project_client(server)
    up = c.uploads.create(bytes=10, filename="a.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    part = c.uploads.parts.create(up.id, data=b"12345")
    with pytest.raises(openai.BadRequestError) as exc:
        c.uploads.complete(up.id, part_ids=[part.id])
    assert exc.value.param == "part_ids"
    assert c.uploads.cancel(up.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        c.uploads.complete(up.id, part_ids=[part.id])


def test_missing_and_wrong_keys_are_401(server):
    with pytest.raises(openai.AuthenticationError) as exc:
        server.client("sk-tf-not-a-real-key-000000000").files.list()
    assert exc.value.code == "invalid_api_key"
    assert exc.value.body["type"] == "invalid_request_error"
    r = httpx.get(f"{server.base_url}/files")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_revoked_key_is_401(server):
    import subprocess

    from tests.e2e.conftest import TUNEFORGE

    key = server.create_key("revoke-me")
    c = server.client(key)
    assert list(c.files.list()) == []
    listing = subprocess.run(
        [TUNEFORGE, "keys", "list", "--project", "revoke-me"],
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key_id = listing.splitlines()[1].split("\t")[0]
    assert key not in listing  # only the redacted form is shown
    subprocess.run([TUNEFORGE, "keys", "revoke", key_id], env=server.env, check=True, capture_output=True)
    with pytest.raises(openai.AuthenticationError):
        c.files.list()


def test_other_project_sees_nothing(server):
    mine, theirs = project_client(server), project_client(server)
    f = mine.files.create(file=("t.jsonl", io.BytesIO(LINES)), purpose="fine-tune")
    up = mine.uploads.create(bytes=1, filename="a.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    for call in (
        lambda: theirs.files.retrieve(f.id),
        lambda: theirs.files.content(f.id),
        lambda: theirs.files.delete(f.id),
        lambda: theirs.uploads.parts.create(up.id, data=b"x"),
        lambda: theirs.uploads.cancel(up.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(theirs.files.list()) == []
    with pytest.raises(openai.BadRequestError):  # their cursor is not ours to follow
        theirs.files.list(after=f.id)
    assert mine.files.retrieve(f.id).id == f.id  # untouched by the attempts above


def test_fine_tune_needs_jsonl_and_purpose_must_be_known(server, client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("train.txt", io.BytesIO(LINES)), purpose="fine-tune")
    assert exc.value.body["message"] == "Invalid file format for Fine-Tuning API. Must be .jsonl"
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("x.jsonl", io.BytesIO(LINES)), purpose="nonsense")  # type: ignore[arg-type]
    assert exc.value.param == "purpose"


def test_hostile_filename_stays_inside_data_dir(server):
    c = project_client(server)
    outside = server.data_dir.parent / "pwned.jsonl"
    f = c.files.create(file=("../../pwned.jsonl", io.BytesIO(LINES)), purpose="fine-tune")
    assert f.filename == "pwned.jsonl"
    assert not outside.exists()
    f2 = c.files.create(file=("/etc/passwd\x00.jsonl", io.BytesIO(LINES)), purpose="fine-tune")
    assert "/" not in f2.filename and "\x00" not in f2.filename
    stored = [p for p in server.data_dir.rglob("*") if p.is_file() and "pwned" in p.name]
    assert stored == []  # blobs are stored under generated keys, never the client's name
    assert c.files.content(f.id).read() == LINES


def test_request_id_is_echoed(server, client):
    raw = client.files.with_raw_response.list(extra_headers={"x-request-id": "req_mine123"})
    assert raw.headers["x-request-id"] == "req_mine123"
    generated = client.files.with_raw_response.list()
    assert generated.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.NotFoundError) as exc:
        client.files.retrieve("file-nope")
    assert exc.value.request_id and exc.value.request_id.startswith("req_")
    assert exc.value.request_id in server.log()  # the access log carries the same id


def test_first_start_prints_an_admin_key_and_stops_gracefully(server_factory):
    srv = server_factory()
    log = srv.log()
    key = [line.strip() for line in log.splitlines() if line.strip().startswith("sk-tf-")]
    assert len(key) == 1 and "tuneforge keys create --project NAME" in log
    assert list(srv.client(key[0]).files.list()) == []
    # uvicorn finishes its graceful shutdown, then re-raises the captured SIGTERM
    assert srv.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in srv.log()
