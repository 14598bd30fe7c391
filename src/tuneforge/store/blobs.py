"""Local blob storage: write to a temp file, fsync, rename; keys are generated, never user input.

A reader never sees a half-written blob (rename is atomic on one filesystem), and no key can
name a path outside `root`: keys are checked against a strict pattern before any path is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tuneforge.errors import TooLarge

CHUNK = 1024 * 1024
_KEY = re.compile(r"^[a-z0-9_-]{1,64}(/[a-z0-9_-]{1,64}){0,4}$")


@dataclass(frozen=True)
class Blob:
    key: str
    bytes: int
    md5: str


class BlobWriter:
    """An in-progress blob: bytes go to a temp file; `commit()` makes it visible under a new key.

    Usable as a context manager: leaving the block without `commit()` removes the temp file.
    """

    def __init__(self, store: BlobStore, prefix: str, max_bytes: int | None, too_large: str):
        self._store = store
        self._prefix = prefix
        self._max = max_bytes
        self._too_large = too_large
        fd, tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="w-")
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.done = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._max is not None and self.size > self._max:
            raise TooLarge(self._too_large, param="file", code="file_too_large")
        self._fh.write(data)
        self._md5.update(data)

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

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_key(prefix: str = "b") -> str:
        # Two-level fan-out keeps directories small with millions of blobs.
        token = secrets.token_hex(16)
        return f"{prefix}/{token[:2]}/{token}"

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid blob key: {key!r}")
        path = (self.root / key).resolve()
        if self.root not in path.parents:  # belt and braces on top of the pattern
            raise ValueError(f"invalid blob key: {key!r}")
        return path

    def writer(
        self, prefix: str = "b", *, max_bytes: int | None = None, too_large: str = "File is too large."
    ) -> BlobWriter:
        return BlobWriter(self, prefix, max_bytes, too_large)

    def write_chunks(
        self, chunks: Iterable[bytes], prefix: str = "b", *, max_bytes: int | None = None
    ) -> Blob:
        with self.writer(prefix, max_bytes=max_bytes) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def write_file(self, src: Path, prefix: str = "b", *, max_bytes: int | None = None) -> Blob:
        with open(src, "rb") as fh:
            return self.write_chunks(iter(lambda: fh.read(CHUNK), b""), prefix, max_bytes=max_bytes)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def iter_chunks(self, key: str, size: int = CHUNK) -> Iterable[bytes]:
        with self.open(key) as fh:
            yield from iter(lambda: fh.read(size), b"")

    def sweep_tmp(self, older_than_s: float = 24 * 3600) -> int:
        """Remove temp files left by a crash mid-write. Only old ones: another process (a worker,
        a second server) may be writing a fresh one right now."""
        cutoff, removed = time.time() - older_than_s, 0
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
        return removed

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
