"""One entry point: check, build into a temp dir beside the target, rename into place."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from tuneforge.errors import InvalidRequest
from tuneforge.export.source import ExportSource, check_options


def export(
    source: ExportSource, fmt: str, out_dir: Path, *, dtype: str | None = None, quant: str | None = None
) -> Path:
    """Write `source` as `fmt` into `out_dir` (which must not exist, or be an empty dir)."""
    dtype = check_options(source, fmt, dtype, quant)
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidRequest(f"{out_dir} exists and is not an empty directory.", param="output")
    plan = _plan(source, fmt, dtype, quant)  # every "cannot convert" is raised here
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        plan(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _plan(source: ExportSource, fmt: str, dtype: str, quant: str | None):
    if fmt == "peft":
        from tuneforge.export.peft import write_peft

        return lambda tmp: write_peft(source, tmp)
    if fmt == "merged":
        from tuneforge.export.merged import write_merged

        return lambda tmp: write_merged(source, tmp, dtype)
    from tuneforge.export.to_gguf import plan_gguf

    return plan_gguf(source, dtype, quant)
