"""Export a project's fine-tuned model or checkpoint (export/ does the work; this wires the store).

Only the owning project exports (a project a checkpoint is shared with may use it, not take its
weights); any other name is OpenAI's 404 `model_not_found`. The API and dashboard build the export
into a temp dir under `<data_dir>/exports`, then stream it as a tar in constant memory
(`tar_stream`) and delete it.
"""

from __future__ import annotations

import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.catalog import model_not_found
from tuneforge.config import Settings
from tuneforge.export import ExportSource, export
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.tables import Job

CHUNK = 1 << 20


def source_for(session: Session, resolver: ModelResolver, project_id: str, name: str) -> ExportSource:
    row = resolver.owned_fine_tuned(session, project_id, name)
    catalog = resolver.catalog(session)
    path = resolver.model_dir(row.path) if row is not None else None  # a local copy, from S3 if there
    if row is None or path is None:
        raise model_not_found(name, catalog.base_names())
    job = session.get(Job, row.job_id)
    return ExportSource(
        name=row.id,
        path=path,
        kind=row.kind,
        base_name=job.model if job is not None else row.base_model,
        base_source=resolver.base_dir(row.base_model, catalog),
    )


def build(settings: Settings, source: ExportSource, fmt: str, dtype: str | None, quant: str | None) -> Path:
    """Export into a fresh directory under `<data_dir>/exports` (the caller removes it)."""
    root = settings.data_dir / "exports"
    out = root / f"{uuid.uuid4().hex}"
    try:
        return export(source, fmt, out / archive_stem(source.name, fmt), dtype=dtype, quant=quant)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def archive_stem(name: str, fmt: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.removeprefix("ft:"))
    return f"{safe}-{fmt}"


def tar_stream(directory: Path, *, remove: Path | None = None) -> Iterator[bytes]:
    """`directory` as an uncompressed tar (entries under its name), read in 1 MiB chunks: memory
    stays flat whatever the model's size. `remove` is deleted when the stream ends or is dropped."""
    try:
        for path in sorted(directory.rglob("*")):
            if not path.is_file():
                continue
            info = tarfile.TarInfo(f"{directory.name}/{path.relative_to(directory).as_posix()}")
            info.size = path.stat().st_size
            info.mtime = int(path.stat().st_mtime)
            info.mode = 0o644
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
            if info.size % tarfile.BLOCKSIZE:
                yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
        yield b"\0" * (2 * tarfile.BLOCKSIZE)
    finally:
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)
