"""Keys, files and pagination against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.services import files, keys
from tuneforge.store.blobs import open_blobs
from tuneforge.store.db import transaction
from tuneforge.store.pagination import paginate
from tuneforge.store.tables import ApiKey, File


def test_keys_are_hashed_and_scoped(db):
    with transaction(db) as s:
        key, secret = keys.create_key(s, "alpha", admin=True, name="ci")
        key2, secret2 = keys.create_key(s, "alpha")
        other, other_secret = keys.create_key(s, "beta")
    assert re.fullmatch(r"sk-tf-[A-Za-z0-9]{40}", secret)
    with transaction(db) as s:
        stored = s.scalars(select(ApiKey.secret_hash)).all()
        assert secret not in stored and keys.hash_secret(secret) in stored
        p = keys.authenticate(s, secret)
        assert p.is_admin and p.project_name == "alpha" and p.organization_id.startswith("org-")
        p2 = keys.authenticate(s, secret2)
        assert p2.project_id == p.project_id and not p2.is_admin
        assert keys.authenticate(s, other_secret).project_id != p.project_id
        assert keys.authenticate(s, secret + "x") is None
        assert {k.id for k, _ in keys.list_keys(s, "alpha")} == {key.id, key2.id}
        keys.revoke_key(s, key.id)
    with transaction(db) as s:
        assert keys.authenticate(s, secret) is None
        with pytest.raises(NotFound):
            keys.revoke_key(s, "key_nope")


def test_create_file_from_path_and_lookup(db, settings, tmp_path):
    blobs = open_blobs(settings)
    src = tmp_path / "step_metrics.csv"
    src.write_text("step,train_loss\n1,2.5\n")
    with transaction(db) as s:
        key, _ = keys.create_key(s, "p")
        row = files.create_file_from_path(
            s,
            blobs,
            project_id=key.project_id,
            filename="step_metrics.csv",
            purpose="fine-tune-results",
            src=src,
        )
    with transaction(db) as s:
        got = files.get_file(s, key.project_id, row.id)
        assert (got.purpose, got.bytes, got.filename) == (
            "fine-tune-results",
            src.stat().st_size,
            "step_metrics.csv",
        )
        assert b"".join(blobs.iter_chunks(got.blob_key)) == src.read_bytes()
        with pytest.raises(NotFound, match=f"No such File object: {row.id}"):
            files.get_file(s, "proj_other", row.id)


def test_rolled_back_file_leaves_no_blob(db, settings):
    blobs = open_blobs(settings)
    with transaction(db) as s:
        project = keys.create_key(s, "p")[0].project_id
    with pytest.raises(RuntimeError), transaction(db) as s:
        row = files.create_file_from_chunks(
            s, blobs, project_id=project, filename="a.jsonl", purpose="fine-tune", chunks=[b"{}\n"]
        )
        key = row.blob_key
        assert blobs.exists(key)
        raise RuntimeError("the caller failed after creating the file")
    assert not blobs.exists(key)
    with transaction(db) as s:
        assert s.scalars(select(File)).all() == []


def test_internal_creates_check_purpose_and_format(db, settings, tmp_path):
    blobs = open_blobs(settings)
    with transaction(db) as s:
        project = keys.create_key(s, "p")[0].project_id
        with pytest.raises(InvalidRequest):
            files.create_file_from_chunks(
                s, blobs, project_id=project, filename="a.jsonl", purpose="nonsense", chunks=[b"x"]
            )
        with pytest.raises(InvalidRequest):
            files.create_file_from_chunks(
                s, blobs, project_id=project, filename="a.txt", purpose="fine-tune", chunks=[b"x"]
            )
    assert blobs.keys("files") == []


def test_paginate_is_a_total_order_with_ties(db):
    with transaction(db) as s:
        project = keys.create_key(s, "p")[0].project_id
        for i in range(7):  # all in the same second: ids break the ties
            s.add(
                File(
                    id=f"file-{i:02d}",
                    project_id=project,
                    filename="f",
                    purpose="batch",
                    bytes=1,
                    created_at=100 + i // 3,
                    blob_key="files/x/y",
                )
            )
    with transaction(db) as s:
        stmt = select(File).where(File.project_id == project)
        for order in ("asc", "desc"):
            seen, after = [], None
            while True:
                page = paginate(s, stmt, sort=[File.created_at, File.id], order=order, after=after, limit=2)
                seen += [f.id for f in page.items]
                if not page.has_more:
                    break
                after = page.items[-1]
            expected = [f"file-{i:02d}" for i in range(7)]
            assert seen == (expected if order == "asc" else expected[::-1])
