"""Uploads API over HTTP on SQLite and PostgreSQL: ordering, checks, expiry, limits, cleanup."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from tests.api.test_errors import assert_envelope
from tuneforge.store.blobs import open_blobs

# Every test runs on both blob backends: a local directory and a real S3 API server (moto).
pytestmark = pytest.mark.parametrize("blob_backend", ["local", "s3"])


def create(client, headers, size, name="u.jsonl", purpose="fine-tune"):
    r = client.post(
        "/v1/uploads",
        headers=headers,
        json={"filename": name, "purpose": purpose, "bytes": size, "mime_type": "text/jsonl"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def part(client, headers, upload_id, data):
    return client.post(f"/v1/uploads/{upload_id}/parts", headers=headers, files={"data": ("blob", data)})


def part_blobs(settings):
    return open_blobs(settings).keys("parts")


def test_complete_in_part_ids_order_with_md5(app_client, auth_headers, settings):
    up = create(app_client, auth_headers, 9)
    ids = {
        chunk: part(app_client, auth_headers, up["id"], chunk).json()["id"]
        for chunk in (b"ccc", b"aaa", b"bbb")
    }
    assert len(part_blobs(settings)) == 3
    order = [ids[b"aaa"], ids[b"bbb"], ids[b"ccc"]]
    r = app_client.post(
        f"/v1/uploads/{up['id']}/complete",
        headers=auth_headers,
        json={"part_ids": order, "md5": hashlib.md5(b"aaabbbccc").hexdigest()},
    )
    done = r.json()
    assert done["status"] == "completed" and done["file"]["bytes"] == 9
    assert (
        app_client.get(f"/v1/files/{done['file']['id']}/content", headers=auth_headers).content
        == b"aaabbbccc"
    )
    assert part_blobs(settings) == []  # parts are dropped once assembled
    again = app_client.post(
        f"/v1/uploads/{up['id']}/complete", headers=auth_headers, json={"part_ids": order}
    )
    assert_envelope(again, 400, param="upload_id", code="upload_not_pending")


def test_complete_checks(app_client, auth_headers):
    up = create(app_client, auth_headers, 6)
    a = part(app_client, auth_headers, up["id"], b"abc").json()["id"]
    b = part(app_client, auth_headers, up["id"], b"def").json()["id"]
    url = f"/v1/uploads/{up['id']}/complete"
    assert_envelope(app_client.post(url, headers=auth_headers, json={"part_ids": [a]}), 400, param="part_ids")
    assert_envelope(
        app_client.post(url, headers=auth_headers, json={"part_ids": [a, a]}), 400, param="part_ids"
    )
    assert_envelope(
        app_client.post(url, headers=auth_headers, json={"part_ids": [a, "part_x"]}), 400, param="part_ids"
    )
    assert_envelope(
        app_client.post(url, headers=auth_headers, json={"part_ids": [a, b], "md5": "0" * 32}),
        400,
        param="md5",
    )
    assert app_client.get("/v1/files", headers=auth_headers).json()["data"] == []
    assert app_client.post(url, headers=auth_headers, json={"part_ids": [a, b]}).status_code == 200


def test_cancel_refuses_parts_and_complete(app_client, auth_headers, settings):
    up = create(app_client, auth_headers, 3)
    p = part(app_client, auth_headers, up["id"], b"abc").json()["id"]
    r = app_client.post(f"/v1/uploads/{up['id']}/cancel", headers=auth_headers)
    assert r.json()["status"] == "cancelled"
    assert part_blobs(settings) == []
    assert_envelope(
        part(app_client, auth_headers, up["id"], b"x"), 400, param="upload_id", code="upload_not_pending"
    )
    assert_envelope(
        app_client.post(f"/v1/uploads/{up['id']}/complete", headers=auth_headers, json={"part_ids": [p]}),
        400,
        param="upload_id",
        code="upload_not_pending",
    )
    assert_envelope(
        app_client.post(f"/v1/uploads/{up['id']}/cancel", headers=auth_headers),
        400,
        param="upload_id",
        code="upload_not_pending",
    )


def test_create_checks(app_client, auth_headers):
    r = app_client.post(
        "/v1/uploads",
        headers=auth_headers,
        json={"filename": "a.txt", "purpose": "fine-tune", "bytes": 3, "mime_type": "text/plain"},
    )
    assert_envelope(r, 400, param="file")
    r = app_client.post(
        "/v1/uploads",
        headers=auth_headers,
        json={"filename": "a.jsonl", "purpose": "nope", "bytes": 3, "mime_type": "x"},
    )
    assert_envelope(r, 400, param="purpose", code="invalid_value")
    r = app_client.post(
        "/v1/uploads",
        headers=auth_headers,
        json={"filename": "a.jsonl", "purpose": "fine-tune", "bytes": 9 * 1024**3, "mime_type": "text/jsonl"},
    )
    assert_envelope(r, 400, param="bytes")
    assert_envelope(
        app_client.post("/v1/uploads/upload_nope/cancel", headers=auth_headers), 404, param="upload_id"
    )


def test_expiry_and_part_limit(tmp_path, db_url, blob_url):
    from tuneforge.app import create_app
    from tuneforge.config import Settings
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import transaction

    for ttl, max_part in ((0, 100), (3600, 4)):
        settings = Settings(
            data_dir=tmp_path / f"d{ttl}",
            database_url=db_url,
            blob_url=blob_url,
            upload_ttl_seconds=ttl,
            max_part_bytes=max_part,
        ).resolved()
        with TestClient(create_app(settings)) as client:
            with transaction(client.app.state.sessionmaker) as s:
                headers = {"Authorization": f"Bearer {create_key(s)[1]}"}
            up = create(client, headers, 5)
            if ttl == 0:  # already past expires_at
                assert up["status"] == "expired"
                assert_envelope(
                    part(client, headers, up["id"], b"abc"), 400, param="upload_id", code="upload_not_pending"
                )
            else:
                assert_envelope(
                    part(client, headers, up["id"], b"abcde"), 413, param="file", code="file_too_large"
                )
                assert part(client, headers, up["id"], b"abcd").status_code == 200
            assert len(part_blobs(settings)) == (0 if ttl == 0 else 1)


def test_expires_after_applies_to_the_file_it_produces(app_client, auth_headers):
    def create_with(purpose="fine-tune", name="u.jsonl", **extra):
        return app_client.post(
            "/v1/uploads",
            headers=auth_headers,
            json={"filename": name, "purpose": purpose, "bytes": 3, "mime_type": "text/jsonl", **extra},
        )

    def finish(up):
        pid = part(app_client, auth_headers, up["id"], b"abc").json()["id"]
        r = app_client.post(
            f"/v1/uploads/{up['id']}/complete", headers=auth_headers, json={"part_ids": [pid]}
        )
        assert r.status_code == 200, r.text
        return r.json()["file"]

    up = create_with(expires_after={"anchor": "created_at", "seconds": 7200}).json()
    assert up["expires_at"] == up["created_at"] + 3600  # the Upload itself: 1 hour, as OpenAI
    f = finish(up)
    assert f["expires_at"] == f["created_at"] + 7200
    assert app_client.get(f"/v1/files/{f['id']}", headers=auth_headers).json() == f
    batch = finish(create_with(purpose="batch", name="b.jsonl").json())
    assert batch["expires_at"] == batch["created_at"] + 30 * 24 * 3600
    assert finish(create(app_client, auth_headers, 3))["expires_at"] is None

    assert_envelope(
        create_with(expires_after={"anchor": "created_at", "seconds": 60}), 400, param="expires_after.seconds"
    )
    assert_envelope(
        create_with(expires_after={"anchor": "updated_at", "seconds": 3600}),
        400,
        param="expires_after.anchor",
    )
