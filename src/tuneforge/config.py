"""One Settings object, built once in `main()` or the app factory and passed down.

Every field can be set with a `TUNEFORGE_<NAME>` environment variable. Nothing here runs at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(default=Path("~/.tuneforge"), description="Database, blobs, models, jobs")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/tuneforge.db"
    )

    # --- HTTP -----------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    # --- files and uploads ----------------------------------------------------------------------
    max_file_bytes: int = Field(default=512 * MB, description="Largest POST /v1/files body")
    max_upload_bytes: int = Field(default=8 * 1024 * MB, description="Largest Uploads API file")
    max_part_bytes: int = Field(default=64 * MB, description="Largest Uploads API part")
    upload_ttl_seconds: int = Field(default=3600, description="An Upload expires this long after creation")

    # --- models ---------------------------------------------------------------------------------
    # Extra base models: name -> Hugging Face id or local directory. `tuneforge-tiny` is always there.
    base_models: dict[str, str] = Field(default_factory=dict)
    # Aliases: name existing code uses -> a base model name, e.g. gpt-4o-mini-2024-07-18 -> Qwen/...
    model_aliases: dict[str, str] = Field(default_factory=dict)

    # --- jobs and workers -----------------------------------------------------------------------
    workers: int = Field(default=1, description="Workers started by `tuneforge serve` (0 = none)")
    worker_concurrency: int = Field(default=1, description="Trainings one worker runs at once")
    job_lease_seconds: int = Field(default=30, description="A worker silent this long loses its job")
    job_max_attempts: int = Field(default=3, description="Runs of one job before it fails for good")
    worker_poll_seconds: float = Field(default=1.0, description="How often an idle worker looks")

    def resolved(self) -> Settings:
        """A copy with `~` expanded and the defaults that depend on data_dir filled in."""
        data_dir = self.data_dir.expanduser().resolve()
        url = self.database_url or f"sqlite:///{data_dir / 'tuneforge.db'}"
        return self.model_copy(update={"data_dir": data_dir, "database_url": url})

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"
