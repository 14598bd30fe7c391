"""Options shared by every command: where the data lives, and the one Settings built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tuneforge.config import Settings

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (database, blobs, models). Env: TUNEFORGE_DATA_DIR.",
        show_default="~/.tuneforge",
    ),
]


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from TUNEFORGE_* env vars, with command-line flags (when given) taking precedence."""
    settings = Settings()
    updates = {k: v for k, v in {"data_dir": data_dir, **overrides}.items() if v is not None}
    return settings.model_copy(update=updates).resolved()
