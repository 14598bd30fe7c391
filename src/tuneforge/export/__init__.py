"""Export a fine-tuned model directory to files other tools load: `peft`, `merged`, `gguf`.

    export(ExportSource(...), "gguf", out_dir, dtype="f16", quant="q8_0")

Takes paths, never the store or the API (services/export.py wires it). Every option and the
model's convertibility are checked before anything is written, and the output is built in a temp
directory beside `out_dir` and renamed into place: a failed export leaves nothing half-written.
"""

from __future__ import annotations

from tuneforge.export.run import export
from tuneforge.export.source import DTYPES, FORMATS, QUANTS, ExportSource, check_options

__all__ = ["DTYPES", "FORMATS", "QUANTS", "ExportSource", "check_options", "export"]
