"""Files API over HTTP (TestClient) on SQLite and PostgreSQL: limits, multipart edge cases, expiry."""

from __future__ import annotations

import pytest

from tests.api.test_errors import assert_envelope
from tuneforge.store.blobs import S3BlobStore, open_blobs

# Every test runs on both blob backends: a local directory and a real S3 API server (moto).
pytestmark = pytest.mark.parametrize("blob_backend", ["local", "s3"])

LINE = b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'


def upload(client, headers, name="t.jsonl", data=LINE, purpose="fine-tune", **extra):
    return client.post(
        "/v1/files", headers=headers, data={"purpose": purpose, **extra}, files={"file": (name, data)}
    )


def blob_files(settings):
    """The stored files' blobs, on whichever backend `settings` names."""
    return open_blobs(settings).keys("files")


def tmp_files(settings):
    """What an unfinished write left behind: temp files locally, open multipart uploads on S3."""
    store = open_blobs(settings)
    if isinstance(store, S3BlobStore):
        return store.s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return list(store.tmp_dir.iterdir())


def test_upload_list_retrieve_delete(app_client, auth_headers, settings):
    r = upload(app_client, auth_headers)
    assert r.status_code == 200, r.text
    f = r.json()
    assert set(f) == {
        "id",
        "object",
        "bytes",
        "created_at",
        "expires_at",
        "filename",
        "purpose",
        "status",
        "status_details",
    }
    assert f["bytes"] == len(LINE) and f["expires_at"] is None
    assert len(blob_files(settings)) == 1
    listing = app_client.get("/v1/files", headers=auth_headers).json()
    assert listing == {
        "object": "list",
        "data": [f],
        "has_more": False,
        "first_id": f["id"],
        "last_id": f["id"],
    }
    content = app_client.get(f"/v1/files/{f['id']}/content", headers=auth_headers)
    assert content.content == LINE
    assert app_client.delete(f"/v1/files/{f['id']}", headers=auth_headers).json()["deleted"] is True
    assert blob_files(settings) == []  # the bytes go with the row
    assert_envelope(app_client.get(f"/v1/files/{f['id']}", headers=auth_headers), 404, param="id")


def test_pagination_cursor_and_filters(app_client, auth_headers):
    ids = [upload(app_client, auth_headers, name=f"{i}.jsonl").json()["id"] for i in range(4)]
    upload(app_client, auth_headers, name="x.pdf", purpose="user_data")
    page = app_client.get("/v1/files?purpose=fine-tune&limit=3&order=asc", headers=auth_headers).json()
    assert [d["id"] for d in page["data"]] == ids[:3] and page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[0], ids[2])
    rest = app_client.get(
        f"/v1/files?purpose=fine-tune&limit=3&order=asc&after={ids[2]}", headers=auth_headers
    ).json()
    assert [d["id"] for d in rest["data"]] == ids[3:] and rest["has_more"] is False
    assert len(app_client.get("/v1/files?purpose=", headers=auth_headers).json()["data"]) == 5
    assert_envelope(app_client.get("/v1/files?after=file-missing", headers=auth_headers), 400, param="after")


def test_fine_tune_requires_jsonl_and_nothing_is_stored(app_client, auth_headers, settings):
    r = upload(app_client, auth_headers, name="train.csv")
    assert assert_envelope(r, 400, param="file") == "Invalid file format for Fine-Tuning API. Must be .jsonl"
    assert_envelope(
        upload(app_client, auth_headers, purpose="bogus"), 400, param="purpose", code="invalid_value"
    )
    assert blob_files(settings) == [] and tmp_files(settings) == []


def test_purpose_after_file_part_is_still_checked(app_client, auth_headers, settings):
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        b'hello\r\n--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        b"fine-tune\r\n--XyZ--\r\n"
    )
    r = app_client.post(
        "/v1/files",
        content=body,
        headers={**auth_headers, "content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert_envelope(r, 400, param="file")
    assert blob_files(settings) == [] and tmp_files(settings) == []


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/json", b'{"purpose": "fine-tune"}'),
        ("multipart/form-data", b"no boundary"),
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\ntrunc',
        ),
        ("multipart/form-data; boundary=XyZ", b"garbage without any boundary"),
    ],
)
def test_malformed_multipart_is_400(app_client, auth_headers, settings, content_type, body):
    r = app_client.post("/v1/files", content=body, headers={**auth_headers, "content-type": content_type})
    assert_envelope(r, 400)
    assert blob_files(settings) == [] and tmp_files(settings) == []


def test_missing_file_or_purpose(app_client, auth_headers):
    r = app_client.post(
        "/v1/files", headers=auth_headers, data={"purpose": "fine-tune"}, files={"other": ("a.jsonl", b"x")}
    )
    assert_envelope(r, 400, param="file")
    r = app_client.post("/v1/files", headers=auth_headers, files={"file": ("a.jsonl", b"x")})
    assert_envelope(r, 400, param="purpose")


def test_size_limit_is_enforced_while_streaming(tmp_path, db_url, blob_url):
    from fastapi.testclient import TestClient

    from tuneforge.app import create_app
    from tuneforge.config import Settings
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import transaction

    settings = Settings(
        data_dir=tmp_path / "d", database_url=db_url, blob_url=blob_url, max_file_bytes=1000
    ).resolved()
    with TestClient(create_app(settings)) as client:
        with transaction(client.app.state.sessionmaker) as s:
            headers = {"Authorization": f"Bearer {create_key(s)[1]}"}
        assert upload(client, headers, data=b"x" * 1000).status_code == 200
        r = upload(client, headers, data=b"x" * 5000)
        assert_envelope(r, 413, param="file", code="file_too_large")
        assert len(client.get("/v1/files", headers=headers).json()["data"]) == 1
        assert len(blob_files(settings)) == 1 and tmp_files(settings) == []


def test_expires_after_and_batch_default(app_client, auth_headers):
    f = upload(
        app_client, auth_headers, **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    ).json()
    assert f["expires_at"] == f["created_at"] + 3600
    b = upload(app_client, auth_headers, name="b.jsonl", purpose="batch").json()
    assert b["expires_at"] == b["created_at"] + 30 * 24 * 3600
    r = upload(
        app_client, auth_headers, **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "5"}
    )
    assert_envelope(r, 400, param="expires_after.seconds")


def test_filenames_are_sanitised(app_client, auth_headers):
    for given, shown in [
        ("../../etc/x.jsonl", "x.jsonl"),
        ("C:\\evil\\y.jsonl", "y.jsonl"),
        (".hidden.jsonl", "hidden.jsonl"),
    ]:
        assert upload(app_client, auth_headers, name=given).json()["filename"] == shown
    assert upload(app_client, auth_headers, name="..", purpose="user_data").json()["filename"] == "file"
    # raw control characters (httpx would percent-encode them) are dropped
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a\x01b\x7f.jsonl"\r\n'
        b"\r\nx\r\n--XyZ--\r\n"
    )
    r = app_client.post(
        "/v1/files",
        content=body,
        headers={**auth_headers, "content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert r.json()["filename"] == "ab.jsonl"


def test_projects_are_isolated(app_client, make_key):
    mine, theirs = make_key("mine"), make_key("theirs")
    f = upload(app_client, mine).json()
    for method, path in [
        ("GET", f"/v1/files/{f['id']}"),
        ("GET", f"/v1/files/{f['id']}/content"),
        ("DELETE", f"/v1/files/{f['id']}"),
    ]:
        r = app_client.request(method, path, headers=theirs)
        assert_envelope(r, 404, param="id")
        assert r.json()["error"]["message"] == f"No such File object: {f['id']}"
    assert app_client.get("/v1/files", headers=theirs).json()["data"] == []
    assert app_client.get(f"/v1/files/{f['id']}", headers=mine).status_code == 200


def test_expires_after_invalid_values_name_the_param(app_client, auth_headers, settings):
    cases = [
        (
            {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
            "expires_after.anchor",
        ),
        ({"expires_after[seconds]": "3600"}, "expires_after.anchor"),
        ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"},
            "expires_after.seconds",
        ),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1h"}, "expires_after.seconds"),
    ]
    for fields, param in cases:
        assert_envelope(upload(app_client, auth_headers, **fields), 400, param=param)
    assert app_client.get("/v1/files", headers=auth_headers).json()["data"] == []
    assert blob_files(settings) == []  # a refused upload leaves no bytes behind


def test_server_start_sweeps_expired_files(tmp_path, db_url, blob_url):
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from tuneforge.app import create_app
    from tuneforge.config import Settings
    from tuneforge.ids import now
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import transaction
    from tuneforge.store.tables import File

    settings = Settings(data_dir=tmp_path / "d", database_url=db_url, blob_url=blob_url).resolved()
    with TestClient(create_app(settings)) as client:
        with transaction(client.app.state.sessionmaker) as s:
            headers = {"Authorization": f"Bearer {create_key(s)[1]}"}
        gone = upload(
            client, headers, **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
        ).json()
        kept = upload(client, headers).json()
        with transaction(client.app.state.sessionmaker) as s:  # an hour and a second later
            s.execute(update(File).where(File.id == gone["id"]).values(expires_at=now() - 1))
        # Expired files vanish from reads at once, before any sweep.
        assert_envelope(client.get(f"/v1/files/{gone['id']}", headers=headers), 404, param="id")
        assert [f["id"] for f in client.get("/v1/files", headers=headers).json()["data"]] == [kept["id"]]
        assert len(blob_files(settings)) == 2  # ... but their bytes are still stored
    with TestClient(create_app(settings)) as client:  # a restart sweeps (no worker here)
        assert len(blob_files(settings)) == 1
        assert client.get(f"/v1/files/{kept['id']}/content", headers=headers).content == LINE
