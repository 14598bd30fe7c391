"""BlobStore: atomic writes, no escape from the root, limits that leave nothing behind."""

from __future__ import annotations

import pytest

from tuneforge.errors import TooLarge
from tuneforge.store.blobs import BlobStore


def test_write_open_delete(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    blob = store.write_chunks([b"ab", b"cd"], "files")
    assert blob.bytes == 4 and blob.md5 == "e2fc714c4727ee9395f324cd2e7f331f"
    assert blob.key.startswith("files/") and store.path(blob.key).read_bytes() == b"abcd"
    with store.open(blob.key) as fh:
        assert fh.read() == b"abcd"
    assert b"".join(store.iter_chunks(blob.key, 3)) == b"abcd"
    store.delete(blob.key)
    assert not store.exists(blob.key)
    store.delete(blob.key)  # idempotent
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "files/../../x",
        "/etc/passwd",
        "files/../x",
        "a//b",
        "",
        "files/x y",
        "FILES/a",
        "a/b/c/d/e/f/g",
    ],
)
def test_keys_cannot_escape_root(tmp_path, key):
    with pytest.raises(ValueError):
        BlobStore(tmp_path).path(key)


def test_too_large_and_abandoned_writes_leave_nothing(tmp_path):
    store = BlobStore(tmp_path)
    with pytest.raises(TooLarge):
        store.write_chunks([b"x" * 10, b"x" * 10], max_bytes=15)
    with store.writer() as w:
        w.write(b"never committed")
    assert list(store.tmp_dir.iterdir()) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_write_file_copies(tmp_path):
    src = tmp_path / "src.csv"
    src.write_bytes(b"step,loss\n1,2.0\n")
    store = BlobStore(tmp_path / "b")
    blob = store.write_file(src, "files")
    assert store.path(blob.key).read_bytes() == src.read_bytes() and blob.bytes == src.stat().st_size


def test_sweep_removes_only_old_temp_files(tmp_path):
    import os
    import time

    store = BlobStore(tmp_path)
    old, fresh = store.tmp_dir / "w-old", store.tmp_dir / "w-fresh"
    old.write_bytes(b"crashed mid-write")
    fresh.write_bytes(b"being written by another process")
    os.utime(old, (time.time() - 2 * 24 * 3600,) * 2)
    assert store.sweep_tmp() == 1
    assert not old.exists() and fresh.exists()
