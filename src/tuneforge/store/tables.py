"""Every table, in one place. Timestamps are integer Unix seconds, as on the wire.

Ids are the public OpenAI-style ids (`file-…`, `ftjob-…`); every user-visible row carries its
`project_id` so that scoping is one WHERE clause.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.store.db import Base


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    # Per-project operator settings (e.g. notification address, screening on/off).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    # Only a hash is stored: the secret is shown once and cannot be recovered from the database.
    secret_hash: Mapped[str] = mapped_column(String(128), unique=True)
    redacted: Mapped[str] = mapped_column(String(32))  # e.g. "sk-tf-ab…yz" for listings
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="processed")
    status_details: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(256))
    __table_args__ = (
        Index("ix_files_project_created", "project_id", "created_at", "id"),
        Index("ix_files_expires_at", "expires_at"),
    )  # the expiry sweeper's scan


class Upload(Base):
    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))
    # The client's `expires_after.seconds`: the File that `complete` produces expires this long
    # after its own creation (None: the purpose's default).
    file_expires_after: Mapped[int | None] = mapped_column(BigInteger)


class UploadPart(Base):
    __tablename__ = "upload_parts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(256))


class Job(Base):
    """A fine-tuning job. The jobs table is also the queue (claim, lease, heartbeat)."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(256))  # as shown: resolved base name
    base_model: Mapped[str] = mapped_column(String(1024))  # what training loads (HF id / dir)
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    # as on the wire: {"type", <type>: {"hyperparameters"}}, the one record of the job's
    # hyperparameters: as requested (`auto`s kept), then resolved once the trainer starts
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON)
    integrations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512))
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    # set when the files are validated: tokens x epochs, and the USD per 1M training tokens the
    # job is quoted (so its cost never changes when the price table does)
    estimated_trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    estimated_cost: Mapped[float | None] = mapped_column(Float)
    training_price: Mapped[float | None] = mapped_column(Float)
    # queue bookkeeping
    requested_action: Mapped[str | None] = mapped_column(String(16))  # "cancel" | "pause"
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # the resumable state published to a remote blob store (jobs/job_state.py): its blob key and
    # step, so that a run on another machine resumes from it; None with a local blob store
    state_key: Mapped[str | None] = mapped_column(String(256))
    state_step: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_jobs_project_created", "project_id", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at"),
    )


class JobEvent(Base):
    __tablename__ = "job_events"
    # `seq` orders events (newest first = seq desc) and makes `after` cursors one index lookup.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    __table_args__ = (Index("ix_job_events_job_seq", "job_id", "seq"),)


class JobCheckpoint(Base):
    __tablename__ = "job_checkpoints"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    step_number: Mapped[int] = mapped_column(Integer)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    __table_args__ = (Index("ix_job_checkpoints_job_step", "job_id", "step_number"),)


class FineTunedModel(Base):
    """A servable model: a job's final model or one of its checkpoints."""

    __tablename__ = "fine_tuned_models"
    id: Mapped[str] = mapped_column(String(512), primary_key=True)  # ft:base:org:suffix:id8[:ckpt-step-N]
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # "lora" | "full"
    base_model: Mapped[str] = mapped_column(String(1024))  # what the adapter attaches to
    path: Mapped[str] = mapped_column(String(1024))  # servable model directory
    created_at: Mapped[int] = mapped_column(BigInteger)


class CheckpointPermission(Base):
    """A fine-tuned model or checkpoint shared with another project (OpenAI's
    `checkpoint.permission`): that project may chat with it and fine-tune on top of it."""

    __tablename__ = "checkpoint_permissions"
    __table_args__ = (UniqueConstraint("model_id", "project_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # cp_…
    model_id: Mapped[str] = mapped_column(ForeignKey("fine_tuned_models.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class StoredBaseModel(Base):
    """A base model registered with `tuneforge models add` (beside TUNEFORGE_BASE_MODELS)."""

    __tablename__ = "base_models"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))  # absolute dir / .gguf path, or a hub id
    kind: Mapped[str] = mapped_column(String(8))  # "dir" | "gguf" | "hub"
    created_at: Mapped[int] = mapped_column(BigInteger)


class StoredModelAlias(Base):
    """Another name for a registered base model (goes with it when it is removed)."""

    __tablename__ = "model_aliases"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    base_model: Mapped[str] = mapped_column(ForeignKey("base_models.name", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class UiSession(Base):
    """A dashboard sign-in: the cookie holds a random token, the row only its SHA-256 and the key
    it stands for, so revoking the key (or signing out) ends the session at once."""

    __tablename__ = "ui_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(token) hex
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class PlaygroundRating(Base):
    """One playground answer and the human judgement of it; answers to the same prompt share a
    `comparison_id`. Exported as DPO preference pairs."""

    __tablename__ = "playground_ratings"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    comparison_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # the prompt conversation
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # temperature, top_p, ...
    model: Mapped[str] = mapped_column(String(512))
    output: Mapped[str] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)  # +1 good, -1 bad, None unrated
    preferred: Mapped[bool] = mapped_column(Boolean, default=False)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (
        Index("ix_playground_ratings_project_comparison", "project_id", "created_at", "comparison_id"),
    )


class WebhookEndpoint(Base):
    """Where job notifications go (`tuneforge webhooks add`); project_id NULL means every project."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    # Kept in clear: signing needs it on every delivery (it authenticates us, it grants nothing).
    secret: Mapped[str] = mapped_column(String(128))
    events: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Delivery(Base):
    """The notification outbox: one row per message to send, written in the same transaction as
    the job status change that causes it, sent (and retried with backoff) by the workers."""

    __tablename__ = "deliveries"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "webhook" | "email"
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(64))  # evt_…: the webhook-id header
    event_type: Mapped[str] = mapped_column(String(64))  # fine_tuning.job.succeeded …
    target: Mapped[str] = mapped_column(Text)  # URL or e-mail address
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    last_status: Mapped[str | None] = mapped_column(String(64))  # "HTTP 500", "ConnectError"
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_deliveries_status_next", "status", "next_attempt_at"),)


class UsageRecord(Base):
    """Inference tokens served, one row per completed request (training tokens live on jobs)."""

    __tablename__ = "usage_records"
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(512))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_usage_records_created", "created_at"),
        Index("ix_usage_records_project_created", "project_id", "created_at"),
    )
