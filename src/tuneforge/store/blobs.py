"""Blob storage for every byte the service keeps: files, upload parts, result files, model
directories (checkpoints, final models). One interface, two implementations, picked once by
`open_blobs(settings)`: a local directory (the embedded default) or an S3-compatible object store
(`TUNEFORGE_BLOB_URL=s3://bucket/prefix`), which every machine of a cluster can reach.

Keys are generated, never user input, and checked against a strict pattern before use. A reader
never sees a half-written blob: locally a temp file is fsynced and renamed; on S3 an object (or a
multipart upload) only exists once it is complete. Model directories are published the same way
(a temp dir renamed; on S3 a manifest written last) and read from local disk: `local_dir(key)` is
the directory itself locally, a download cache on S3 (downloaded once per key and machine, into a
temp dir renamed into place, so concurrent processes never see a partial copy); that cache can
be capped (`trim_cache`: least recently used first). `fetch_dir(key, dest)` is a download the
caller owns (a job's saved state, moved into its job directory: jobs/job_state.py).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tuneforge.config import Settings
from tuneforge.errors import TooLarge

CHUNK = 1024 * 1024
PART = 8 * CHUNK  # S3 multipart part size (S3's minimum is 5 MiB): memory per upload stays at this
_KEY = re.compile(r"^[a-z0-9_-]{1,64}(/[a-z0-9_-]{1,64}){0,4}$")
MODELS = "models"  # the key prefix of model directories
MANIFEST = "manifest.json"  # a model directory on S3: its file list, written last
# A local copy used this recently may be being loaded by another process of this machine (the
# cache is shared): the cache size cap never removes it.
CACHE_IDLE_SECONDS = 120.0


@dataclass(frozen=True)
class Blob:
    key: str
    bytes: int
    md5: str


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"invalid blob key: {key!r}")
    return key


def is_model_key(ref: str) -> bool:
    """Whether a model reference (a fine-tuned model row's path or base) is a published model
    directory's key, rather than a local path (rows written before models were blobs) or a hub id."""
    return ref.startswith(MODELS + "/") and bool(_KEY.match(ref))


class BlobWriter(abc.ABC):
    """An in-progress blob; `commit()` makes it visible under a new key. As a context manager,
    leaving the block without `commit()` discards what was written."""

    def __init__(self, max_bytes: int | None, too_large: str):
        self._max = max_bytes
        self._too_large = too_large
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.done = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._max is not None and self.size > self._max:
            raise TooLarge(self._too_large, param="file", code="file_too_large")
        self._md5.update(data)
        self._write(data)

    @property
    def flush_due(self) -> bool:
        """True when the next `flush()` does I/O worth moving off an event loop (an S3 part)."""
        return False

    def flush(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> Blob: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class BlobStore(abc.ABC):
    """What every caller uses; see the module docstring."""

    # Whether the bytes live off this machine (S3): only then does a job's resumable state need
    # copying out of its local directory for another machine to resume it (jobs/job_state.py).
    remote = False

    @staticmethod
    def new_key(prefix: str = "b") -> str:
        # Two-level fan-out keeps directories (and S3 listings) small with millions of blobs.
        token = secrets.token_hex(16)
        return check_key(f"{prefix}/{token[:2]}/{token}")

    @abc.abstractmethod
    def writer(
        self, prefix: str = "b", *, max_bytes: int | None = None, too_large: str = "File is too large."
    ) -> BlobWriter: ...

    def write_chunks(
        self, chunks: Iterable[bytes], prefix: str = "b", *, max_bytes: int | None = None
    ) -> Blob:
        with self.writer(prefix, max_bytes=max_bytes) as w:
            for chunk in chunks:
                w.write(chunk)
                if w.flush_due:
                    w.flush()
            return w.commit()

    def write_file(self, src: Path, prefix: str = "b", *, max_bytes: int | None = None) -> Blob:
        with open(src, "rb") as fh:
            return self.write_chunks(iter(lambda: fh.read(CHUNK), b""), prefix, max_bytes=max_bytes)

    @abc.abstractmethod
    def iter_chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob (idempotent)."""

    @abc.abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every blob key under `prefix` (for sweeps and tests)."""

    @abc.abstractmethod
    def local_file(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local path with the blob's bytes for the duration of the block (reading only)."""

    def fetch(self, key: str, dest: Path) -> Path:
        """The blob as a local file that lasts: downloaded to `dest` (temp file + rename) where the
        store is remote; the stored file itself where it is local."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}")
        try:
            with open(tmp, "wb") as fh:
                for chunk in self.iter_chunks(key):
                    fh.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    # ---- model directories -----------------------------------------------------------------
    @abc.abstractmethod
    def put_dir(self, src: Path, prefix: str = MODELS) -> str:
        """Publish a directory's files under a new key (the source is left as it is)."""

    @abc.abstractmethod
    def local_dir(self, key: str) -> Path:
        """The directory's files on local disk (downloaded once per key on S3)."""

    @abc.abstractmethod
    def fetch_dir(self, key: str, dest: Path) -> Path:
        """The directory's files as a local directory that lasts and is the caller's to move:
        downloaded into `dest` (a temp dir renamed) where the store is remote; the stored
        directory itself where it is local (not to be moved)."""

    @abc.abstractmethod
    def delete_dir(self, key: str) -> None: ...

    @abc.abstractmethod
    def dir_exists(self, key: str) -> bool: ...

    def sweep_tmp(self, older_than_s: float = 24 * 3600) -> int:
        """Remove leftovers of writes a crash interrupted; 0 where there are none to find."""
        return 0

    def cached_dirs(self) -> list[str]:
        """Keys of model directories copied to this machine (none where the store is local)."""
        return []

    def forget_local(self, key: str) -> None:  # noqa: B027 - nothing to forget locally
        """Drop this machine's copy of a model directory (the stored one stays)."""

    def trim_cache(
        self, max_bytes: int, *, keep: Collection[str] = (), idle_s: float = CACHE_IDLE_SECONDS
    ) -> list[str]:
        """Drop this machine's least recently used model copies until they fit in `max_bytes`,
        never one in `keep` (in use here) nor one used in the last `idle_s`; -> the keys dropped
        (a later use downloads it again). Nothing to drop where the store is local."""
        return []


# ---- local directory ---------------------------------------------------------------------------
class _LocalWriter(BlobWriter):
    def __init__(self, store: LocalBlobStore, prefix: str, max_bytes: int | None, too_large: str):
        super().__init__(max_bytes, too_large)
        self._store, self._prefix = store, prefix
        fd, tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="w-")
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")

    def _write(self, data: bytes) -> None:
        self._fh.write(data)

    def commit(self) -> Blob:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        key = self._store.new_key(self._prefix)
        dest = self._store.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, dest)
        self.done = True
        return Blob(key=key, bytes=self.size, md5=self._md5.hexdigest())

    def abort(self) -> None:
        if not self.done:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self.done = True


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:  # belt and braces on top of the pattern
            raise ValueError(f"invalid blob key: {key!r}")
        return path

    def writer(
        self, prefix: str = "b", *, max_bytes: int | None = None, too_large: str = "File is too large."
    ) -> BlobWriter:
        return _LocalWriter(self, prefix, max_bytes, too_large)

    def iter_chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]:
        with open(self.path(key), "rb") as fh:
            yield from iter(lambda: fh.read(size), b"")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        root = self.root / check_key(prefix)
        return sorted(p.relative_to(self.root).as_posix() for p in root.rglob("*") if p.is_file())

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        yield self.path(key)

    def fetch(self, key: str, dest: Path) -> Path:
        return self.path(key)

    def put_dir(self, src: Path, prefix: str = MODELS) -> str:
        key = self.new_key(prefix)
        tmp = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="d-"))
        try:
            for f in sorted(Path(src).rglob("*")):
                if f.is_file():
                    dest = tmp / f.relative_to(src)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:  # the trainer never rewrites a file it wrote: a hard link costs nothing
                        os.link(f, dest)
                    except OSError:
                        shutil.copy2(f, dest)
            final = self.path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return key

    def local_dir(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_dir():
            raise FileNotFoundError(f"no model directory {key}")
        return path

    def fetch_dir(self, key: str, dest: Path) -> Path:
        return self.local_dir(key)

    def dir_exists(self, key: str) -> bool:
        return self.path(key).is_dir()

    def delete_dir(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir():  # rename first: a reader never meets a half-removed directory
            gone = self.tmp_dir / f"rm-{secrets.token_hex(8)}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, gone)
                shutil.rmtree(gone, ignore_errors=True)

    def sweep_tmp(self, older_than_s: float = 24 * 3600) -> int:
        """Temp files and dirs left by a crash mid-write. Only old ones: another process (a worker,
        a second server) may be writing a fresh one right now."""
        cutoff, removed = time.time() - older_than_s, 0
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    removed += 1
        return removed


# ---- S3-compatible object store ----------------------------------------------------------------
class _S3Writer(BlobWriter):
    """Up to PART bytes in memory; past that, a multipart upload of PART-sized parts. Nothing is
    visible under the key until `commit()` (PutObject, or CompleteMultipartUpload)."""

    def __init__(self, store: S3BlobStore, prefix: str, max_bytes: int | None, too_large: str):
        super().__init__(max_bytes, too_large)
        self._store = store
        self.key = store.new_key(prefix)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def _write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= 2 * PART:  # a caller that never flushes still stays bounded
            self.flush()

    @property
    def flush_due(self) -> bool:
        return len(self._buf) >= PART

    def flush(self) -> None:
        s3, bucket, name = self._store.s3, self._store.bucket, self._store.name(self.key)
        while len(self._buf) >= PART:
            if self._upload_id is None:
                self._upload_id = s3.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
            with memoryview(self._buf) as view:  # one copy of the part, not two
                part = view[:PART].tobytes()
            del self._buf[:PART]
            self._send(part)

    def _send(self, body: bytes) -> None:
        n = len(self._parts) + 1
        r = self._store.s3.upload_part(
            Bucket=self._store.bucket,
            Key=self._store.name(self.key),
            UploadId=self._upload_id,
            PartNumber=n,
            Body=body,
        )
        self._parts.append({"PartNumber": n, "ETag": r["ETag"]})

    def commit(self) -> Blob:
        s3, bucket, name = self._store.s3, self._store.bucket, self._store.name(self.key)
        if self._upload_id is None:
            s3.put_object(Bucket=bucket, Key=name, Body=bytes(self._buf))
        else:
            if self._buf or not self._parts:
                self._send(bytes(self._buf))
            s3.complete_multipart_upload(
                Bucket=bucket, Key=name, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )
        self._buf = bytearray()
        self.done = True
        return Blob(key=self.key, bytes=self.size, md5=self._md5.hexdigest())

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self._buf = bytearray()
            if self._upload_id is not None:
                with contextlib.suppress(Exception):  # unfinished uploads also expire by bucket rule
                    self._store.s3.abort_multipart_upload(
                        Bucket=self._store.bucket, Key=self._store.name(self.key), UploadId=self._upload_id
                    )


class S3BlobStore(BlobStore):
    """Objects under `s3://bucket/prefix/<key>`. Endpoint, region and credentials come from the
    standard AWS settings (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, ...), read by
    boto3 itself. `cache_dir` holds downloaded model directories and temporary copies of files."""

    remote = True

    def __init__(self, url: str, cache_dir: Path):
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"TUNEFORGE_BLOB_URL must look like s3://bucket/prefix, not {url!r}")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        # Path-style addressing works with every S3-compatible server (MinIO, moto, Ceph) as well as AWS.
        self.s3 = boto3.client(
            "s3", config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"})
        )
        self.cache_dir = Path(cache_dir)
        self.tmp_dir = self.cache_dir / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def writer(
        self, prefix: str = "b", *, max_bytes: int | None = None, too_large: str = "File is too large."
    ) -> BlobWriter:
        return _S3Writer(self, prefix, max_bytes, too_large)

    def iter_chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]:
        return self._get(self.name(key), key, size)

    def _get(self, name: str, key: str, size: int = CHUNK) -> Iterator[bytes]:
        """An object's bytes; FileNotFoundError (not a botocore error) when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=name)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from None
            raise
        try:
            yield from body.iter_chunks(size)
        finally:
            body.close()

    def _head(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=name)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def exists(self, key: str) -> bool:
        return self._head(self.name(key))

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.name(key))

    def _names(self, prefix: str) -> Iterator[str]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def keys(self, prefix: str) -> list[str]:
        base = self.name(prefix) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(n[strip:] for n in self._names(base))

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="f-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in self.iter_chunks(key):
                    fh.write(chunk)
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_dir(self, src: Path, prefix: str = MODELS) -> str:
        key = self.new_key(prefix)
        base = self.name(key)
        files = [f for f in sorted(Path(src).rglob("*")) if f.is_file()]
        manifest = []
        for f in files:  # upload_file streams (multipart for big weights), never the whole file in memory
            rel = f.relative_to(src).as_posix()
            self.s3.upload_file(str(f), self.bucket, f"{base}/{rel}")
            manifest.append({"path": rel, "bytes": f.stat().st_size})
        self.s3.put_object(Bucket=self.bucket, Key=f"{base}/{MANIFEST}", Body=json.dumps(manifest).encode())
        return key

    def dir_exists(self, key: str) -> bool:
        return self._head(f"{self.name(key)}/{MANIFEST}")

    def local_dir(self, key: str) -> Path:
        final = self.cache_dir / check_key(key)
        if not final.is_dir():
            self._download_dir(key, final, self.tmp_dir)
        with contextlib.suppress(FileNotFoundError):  # its mtime: when it was last used (trim_cache)
            os.utime(final)
        return final

    def fetch_dir(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return self._download_dir(key, dest, dest.parent)

    def _download_dir(self, key: str, final: Path, tmp_parent: Path) -> Path:
        """The directory's files into `final`, through a temp dir (in `tmp_parent`, on the same
        disk) renamed into place: a reader never sees a partial copy; a copy another process put
        there first wins."""
        manifest = json.loads(b"".join(self._get(f"{self.name(key)}/{MANIFEST}", key)))
        tmp = Path(tempfile.mkdtemp(dir=tmp_parent, prefix=f".{final.name}.d-"))
        try:
            for entry in manifest:
                rel = entry["path"]
                if rel.startswith("/") or ".." in rel.split("/"):
                    raise ValueError(f"bad path in {key}'s manifest: {rel!r}")
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(self.bucket, f"{self.name(key)}/{rel}", str(dest))
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another process put the same download in place first: use theirs
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def delete_dir(self, key: str) -> None:
        base = self.name(key)
        # The manifest first: from then on no process starts a download of a half-deleted directory.
        self.s3.delete_object(Bucket=self.bucket, Key=f"{base}/{MANIFEST}")
        names = list(self._names(base + "/"))
        for i in range(0, len(names), 1000):
            self.s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": n} for n in names[i : i + 1000]], "Quiet": True},
            )
        self.forget_local(key)

    def cached_dirs(self) -> list[str]:
        root = self.cache_dir / MODELS
        return [d.relative_to(self.cache_dir).as_posix() for d in root.glob("*/*") if d.is_dir()]

    def forget_local(self, key: str) -> None:
        cached = self.cache_dir / check_key(key)
        if cached.is_dir():  # renamed away first: a loader never meets a half-removed directory
            gone = self.tmp_dir / f"rm-{secrets.token_hex(8)}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(cached, gone)
                shutil.rmtree(gone, ignore_errors=True)

    def trim_cache(
        self, max_bytes: int, *, keep: Collection[str] = (), idle_s: float = CACHE_IDLE_SECONDS
    ) -> list[str]:
        found: list[tuple[float, str, int]] = []  # (last used, key, bytes)
        for key in self.cached_dirs():
            path = self.cache_dir / key
            try:
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                found.append((path.stat().st_mtime, key, size))
            except FileNotFoundError:  # forgotten meanwhile by another process
                continue
        total = sum(size for _used, _key, size in found)
        cutoff = time.time() - idle_s
        dropped: list[str] = []
        for used, key, size in sorted(found):  # least recently used first
            if total <= max_bytes:
                break
            if key in keep or used > cutoff:
                continue
            self.forget_local(key)
            total -= size
            dropped.append(key)
        return dropped

    def sweep_tmp(self, older_than_s: float = 24 * 3600) -> int:
        cutoff, removed = time.time() - older_than_s, 0
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    removed += 1
        return removed


def open_blobs(settings: Settings) -> BlobStore:
    """The one place the backend is chosen (Settings.blob_url)."""
    if settings.blob_url:
        return S3BlobStore(settings.blob_url, settings.blob_cache)
    return LocalBlobStore(settings.blobs_dir)
