"""Blob stores (a local directory and a real S3 API server): atomic writes, no escape from the root,
limits that leave nothing behind, multipart uploads in constant memory, model directories that
another process reads from its own cache."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from tuneforge.config import Settings
from tuneforge.errors import TooLarge
from tuneforge.store.blobs import PART, LocalBlobStore, S3BlobStore, open_blobs


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    url = request.getfixturevalue("s3_blob_url") if request.param == "s3" else None
    return open_blobs(Settings(data_dir=tmp_path / "data", blob_url=url).resolved())


def test_open_blobs_picks_the_backend_from_settings(tmp_path, s3_blob_url):
    assert isinstance(open_blobs(Settings(data_dir=tmp_path).resolved()), LocalBlobStore)
    s3 = open_blobs(Settings(data_dir=tmp_path, blob_url=s3_blob_url).resolved())
    assert isinstance(s3, S3BlobStore) and s3.prefix == "blobs"
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_blobs(Settings(data_dir=tmp_path, blob_url="http://nope").resolved())


def test_write_read_delete(store):
    blob = store.write_chunks([b"ab", b"cd"], "files")
    assert blob.bytes == 4 and blob.md5 == "e2fc714c4727ee9395f324cd2e7f331f"
    assert blob.key.startswith("files/") and store.keys("files") == [blob.key]
    assert b"".join(store.iter_chunks(blob.key, 3)) == b"abcd"
    with store.local_file(blob.key) as path:
        assert path.read_bytes() == b"abcd"
    store.delete(blob.key)
    assert not store.exists(blob.key) and store.keys("files") == []
    store.delete(blob.key)  # idempotent
    with pytest.raises(FileNotFoundError):
        next(iter(store.iter_chunks(blob.key)))


def test_large_blob_is_a_multipart_upload_invisible_until_committed(store):
    data = os.urandom(2 * PART + 12345)  # three parts on S3
    with store.writer("files") as w:
        for i in range(0, len(data), 100_000):
            w.write(data[i : i + 100_000])
            if w.flush_due:
                w.flush()
        assert store.keys("files") == []  # nothing visible before commit
        blob = w.commit()
    assert blob.bytes == len(data) and blob.md5 == hashlib.md5(data).hexdigest()
    assert b"".join(store.iter_chunks(blob.key)) == data


def test_too_large_and_abandoned_writes_leave_nothing(store):
    with pytest.raises(TooLarge):
        store.write_chunks([b"x" * 10, b"x" * 10], max_bytes=15)
    with store.writer() as w:
        w.write(b"never committed")
    big = os.urandom(PART + 1)
    with store.writer("files") as w:  # a multipart upload that started, then was abandoned
        w.write(big)
        w.flush()
    assert store.keys("b") == [] and store.keys("files") == []
    if isinstance(store, S3BlobStore):
        assert store.s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    else:
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
def test_keys_cannot_escape_root(store, key):
    with pytest.raises(ValueError):
        store.exists(key)


def test_fetch_gives_a_lasting_local_copy(store, tmp_path):
    blob = store.write_chunks([b"line 1\n", b"line 2\n"], "files")
    got = store.fetch(blob.key, tmp_path / "job" / "training.jsonl")
    assert got.read_bytes() == b"line 1\nline 2\n"
    assert [p.name for p in got.parent.iterdir()] == [got.name]  # no temp file left beside it


def test_write_file_copies(store, tmp_path):
    src = tmp_path / "src.csv"
    src.write_bytes(b"step,loss\n1,2.0\n")
    blob = store.write_file(src, "files")
    assert b"".join(store.iter_chunks(blob.key)) == src.read_bytes() and blob.bytes == src.stat().st_size


def test_model_directory_reaches_another_process_through_its_cache(store, tmp_path):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_model.safetensors").write_bytes(os.urandom(3000))
    (src / "sub" / "tokenizer.json").write_text("{}")
    key = store.put_dir(src)
    assert store.dir_exists(key)
    # Another machine: its own data dir (and cache), the same store.
    other = open_blobs(Settings(data_dir=tmp_path / "other", blob_url=getattr(store, "url", None)).resolved())
    if isinstance(store, LocalBlobStore):
        other = store
    # Concurrent first uses download once each into a temp dir renamed into place: all agree.
    found: list = []
    threads = [threading.Thread(target=lambda: found.append(other.local_dir(key))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1
    got = found[0]
    assert (got / "adapter_model.safetensors").read_bytes() == (
        src / "adapter_model.safetensors"
    ).read_bytes()
    assert (got / "sub" / "tokenizer.json").read_text() == "{}"
    assert other.cached_dirs() == ([key] if isinstance(other, S3BlobStore) else [])
    store.delete_dir(key)
    assert not store.dir_exists(key)
    with pytest.raises(Exception):  # noqa: B017 - gone from the store (a fresh machine cannot load it)
        open_blobs(
            Settings(data_dir=tmp_path / "third", blob_url=getattr(store, "url", None)).resolved()
        ).local_dir(key)
    other.forget_local(key)
    assert not got.exists()


def test_sweep_removes_only_old_temp_files(tmp_path):
    store = LocalBlobStore(tmp_path)
    old, fresh = store.tmp_dir / "w-old", store.tmp_dir / "w-fresh"
    old.write_bytes(b"crashed mid-write")
    fresh.write_bytes(b"being written by another process")
    os.utime(old, (time.time() - 2 * 24 * 3600,) * 2)
    assert store.sweep_tmp() == 1
    assert not old.exists() and fresh.exists()


def test_cache_cap_drops_the_least_recently_used_copies_not_in_use(store, tmp_path):
    keys = []
    for i in range(3):
        src = tmp_path / f"m{i}"
        src.mkdir()
        (src / "adapter_model.safetensors").write_bytes(os.urandom(1000))
        keys.append(store.put_dir(src))
    if isinstance(store, LocalBlobStore):  # the stored directories themselves: nothing to drop
        assert store.trim_cache(0, idle_s=0) == []
        return
    machine = open_blobs(Settings(data_dir=tmp_path / "machine", blob_url=store.url).resolved())
    for age, key in zip((500, 400, 300), keys):  # last used 500, 400 and 300 s ago
        path = machine.local_dir(key)
        os.utime(path, (time.time() - age,) * 2)
    # Room for two: the least recently used one that is not in use goes (keys[0] is loaded).
    assert machine.trim_cache(2500, keep={keys[0]}) == [keys[1]]
    assert sorted(machine.cached_dirs()) == sorted([keys[0], keys[2]])
    # A copy used a moment ago (another process may be loading it) stays, whatever the cap.
    assert machine.local_dir(keys[1]).is_dir()  # downloaded again, and used now
    assert machine.trim_cache(0, keep={keys[0]}) == [keys[2]]
    assert sorted(machine.cached_dirs()) == sorted([keys[0], keys[1]])


def test_fetch_dir_downloads_a_directory_that_is_the_callers(store, tmp_path):
    src = tmp_path / "state"
    (src / "state").mkdir(parents=True)
    (src / "state" / "optimizer.pt").write_bytes(b"moments")
    key = store.put_dir(src, "states")
    got = store.fetch_dir(key, tmp_path / "job" / ".restore-1")
    assert (got / "state" / "optimizer.pt").read_bytes() == b"moments"
    if isinstance(store, S3BlobStore):  # a copy of its own, outside the model cache
        assert got == tmp_path / "job" / ".restore-1" and store.cached_dirs() == []
        assert not [p for p in (tmp_path / "job").iterdir() if p != got]
    else:  # the stored directory itself: nothing copied
        assert got == store.local_dir(key)
