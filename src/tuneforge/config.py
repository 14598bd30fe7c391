"""One Settings object, built once in `main()` or the app factory and passed down.

Every field can be set with a `TUNEFORGE_<NAME>` environment variable. Nothing here runs at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024


class ModelPrice(BaseModel):
    """USD per 1M tokens. Missing models fall back to their base model, then to "default"."""

    training: float = 0.0
    input: float = 0.0
    output: float = 0.0


class RayResources(BaseModel):
    """What one job asks of the Ray cluster; a field left out keeps the TUNEFORGE_RAY_* default."""

    workers: int | None = Field(default=None, ge=1)
    cpus_per_worker: float | None = Field(default=None, ge=0)
    gpus_per_worker: float | None = Field(default=None, ge=0)
    sharding: Literal["auto", "ddp", "fsdp"] | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(default=Path("~/.tuneforge"), description="Database, blobs, models, jobs")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/tuneforge.db"
    )
    # Files, upload parts, result files and model directories. Unset: <data_dir>/blobs. On S3 the
    # endpoint, region and credentials are the standard AWS_* settings, read by boto3 itself.
    blob_url: str | None = Field(default=None, description="s3://bucket/prefix; unset = local directory")
    blob_cache_dir: Path | None = Field(
        default=None, description="Local copies of S3 model directories; default <data_dir>/cache"
    )
    blob_cache_max_mb: int = Field(
        default=0, ge=0, description="Cap on those copies: least recently used unloaded ones go (0 = none)"
    )
    # Shared state of several API processes (rate limits). Unset: kept in each process's memory.
    redis_url: str | None = Field(default=None, description="redis://host:port/db for shared rate limits")

    # --- HTTP -----------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    # --- files and uploads ----------------------------------------------------------------------
    max_file_bytes: int = Field(default=512 * MB, description="Largest POST /v1/files body")
    max_upload_bytes: int = Field(default=8 * 1024 * MB, description="Largest Uploads API file")
    max_part_bytes: int = Field(default=64 * MB, description="Largest Uploads API part")
    upload_ttl_seconds: int = Field(default=3600, description="An Upload expires this long after creation")
    expiry_sweep_seconds: float = Field(
        default=300.0, description="How often each worker deletes expired files and dead upload parts"
    )

    # --- models ---------------------------------------------------------------------------------
    # Extra base models: name -> Hugging Face id or local directory. `tuneforge-tiny` is always there.
    base_models: dict[str, str] = Field(default_factory=dict)
    # Aliases: name existing code uses -> a base model name, e.g. gpt-4o-mini-2024-07-18 -> Qwen/...
    model_aliases: dict[str, str] = Field(default_factory=dict)

    # --- serving (inference engine) ---------------------------------------------------------------
    inference_device: str = Field(default="auto", description="auto (cuda if present) | cpu | cuda[:N]")
    adapter_cache_mb: int = Field(default=1024, description="LoRA adapters kept attached per base model")
    max_batch_size: int = Field(default=64, description="Sequences decoded together per model")
    max_loaded_models: int = Field(default=4, description="Base/full models kept in memory (LRU)")
    # A model deleted through another API process leaves this one's engine within this time (its
    # name already 404s at once: every request reads the store).
    model_sync_seconds: float = Field(default=2.0, description="How often serving drops deleted models")
    # bf16 matmuls round differently with the batch's shape, so on CPU a greedy answer could change
    # with its batch neighbours; fp32 keeps every answer independent of the batch. "auto" uses the
    # measured probe (hardware.bf16_is_fast) for speed over that guarantee.
    inference_cpu_bf16: Literal["off", "auto"] = Field(
        default="off", description="CPU serving in bf16: off (fp32, batch-invariant) | auto (probe)"
    )

    # --- serving on vLLM (README: "Serving on vLLM") -------------------------------------------
    # Which engine answers a base model and its LoRA fine-tunes: globally, or per base model name.
    engine: Literal["builtin", "vllm"] = Field(default="builtin", description="builtin | vllm")
    model_engines: dict[str, Literal["builtin", "vllm"]] = Field(
        default_factory=dict, description="Base model name -> engine (overrides `engine`)"
    )
    # Base model name -> the URL of a vLLM server the operator runs (implies engine vllm for it);
    # it must serve that model with --enable-lora and runtime LoRA updating, and see our files.
    vllm_urls: dict[str, str] = Field(default_factory=dict, description="Base model -> operator's vLLM URL")
    vllm_command: str = Field(
        default="python -m vllm.entrypoints.openai.api_server",
        description="How tuneforge starts a vLLM server (one per base model); args are appended",
    )
    vllm_host: str = "127.0.0.1"
    vllm_port: int = Field(default=0, description="First port of the started servers (0 = any free)")
    vllm_dtype: str = Field(default="auto", description="--dtype of the started servers")
    vllm_max_model_len: int | None = Field(default=None, description="--max-model-len (None: the model's)")
    vllm_max_loras: int = Field(default=8, description="--max-loras: adapters in one batch")
    vllm_max_lora_rank: int = Field(default=16, description="--max-lora-rank (tuneforge trains rank 16)")
    vllm_args: str = Field(default="", description="Extra arguments for the started servers")
    vllm_max_adapters: int = Field(default=32, description="Adapters kept loaded per vLLM server (LRU)")
    vllm_start_timeout_seconds: float = Field(default=600.0, description="A start slower than this fails")
    vllm_retry_after_seconds: int = Field(default=10, description="Retry-After of a 503 while vLLM starts")
    # A full fine-tune of a base served by vLLM has weights of its own, so no adapter can stand in:
    # "own" starts a vLLM server for it on its first request (at most vllm_max_full_servers at once,
    # the least recently used idle one stopped beyond that); "builtin" serves it on the built-in engine.
    vllm_full: Literal["own", "builtin"] = Field(
        default="own", description="Full fine-tunes of a vLLM base: own (a vLLM server each) | builtin"
    )
    vllm_max_full_servers: int = Field(
        default=2, ge=1, description="vLLM servers for full fine-tunes at once (LRU beyond)"
    )

    # --- jobs and workers -----------------------------------------------------------------------
    workers: int = Field(default=1, description="Workers started by `tuneforge serve` (0 = none)")
    worker_concurrency: int = Field(default=1, description="Trainings one worker runs at once")
    job_lease_seconds: int = Field(default=30, description="A worker silent this long loses its job")
    job_max_attempts: int = Field(default=3, description="Runs of one job before it fails for good")
    worker_poll_seconds: float = Field(default=1.0, description="How often an idle worker looks")
    # GPU training speed (training/accel.py); CPU runs ignore both unless checkpointing is "on".
    train_gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Jobs' gradient checkpointing: auto (GPU, when memory is short) | on | off",
    )
    train_torch_compile: bool = Field(default=False, description="Jobs compile each decoder layer")
    # OpenAI's API has no LoRA/full switch, so it is the operator's, per base model (name or alias
    # as jobs name it): its jobs train every weight (sharded over Ray workers: `ray_sharding`).
    full_fine_tune_models: list[str] = Field(
        default_factory=list, description="Base models whose jobs train every weight instead of LoRA"
    )
    # Where training runs (README "Training on a Ray cluster"): `local` = a child process of the
    # worker (jobs/runner.py); `ray` = the same runner hands the training to Ray Train
    # (jobs/ray_executor.py), data-parallel over `ray_workers` ranks.
    executor: Literal["local", "ray"] = Field(default="local", description="local | ray")
    ray_address: str | None = Field(
        default=None, description="Ray cluster (host:port); default $RAY_ADDRESS, else `auto`"
    )
    ray_workers: int = Field(default=1, ge=1, description="Ray Train workers (data-parallel ranks) per job")
    ray_cpus_per_worker: float = Field(default=1.0, ge=0, description="CPUs each Ray Train worker asks for")
    ray_gpus_per_worker: float = Field(default=0.0, ge=0, description="GPUs each Ray Train worker asks for")
    # How the ranks hold a full fine-tune (training/parallel.py `uses_fsdp`, the one rule): `ddp` = a
    # whole copy per rank; `fsdp` = weights, gradients and Adam state sharded per decoder layer
    # (FSDP2), for a full fine-tune that does not fit one device; `auto` = fsdp for full fine-tunes
    # on more than one worker. LoRA jobs always run ddp-style (their trainable weights are small).
    ray_sharding: Literal["auto", "ddp", "fsdp"] = Field(
        default="auto", description="auto | ddp | fsdp: how a full fine-tune is spread over the workers"
    )
    # base model name (or alias) -> what its jobs ask for instead, e.g.
    # {"my-llama": {"workers": 4, "gpus_per_worker": 1, "sharding": "fsdp"}}
    ray_resources: dict[str, RayResources] = Field(default_factory=dict)
    # A CPU shared with other busy processes: fewer threads than CPUs avoids OpenMP threads waiting
    # on each other (measured: 1 thread ran a SmolLM2 step ~10x faster than 2 at load average 15).
    train_threads: int | None = Field(
        default=None, description="CPU threads per training; empty = every CPU the worker may use"
    )
    # OpenAI serves step_metrics.csv base64-encoded (openai-api.md §5); off = plain CSV.
    result_files_base64: bool = Field(default=False, description="Store/serve result CSVs base64-encoded")

    # --- integrations, safety and accounting (README: "Integrations, safety and accounting") ---
    # The W&B key is server configuration only: never in a job, an event or a log line.
    wandb_api_key: SecretStr | None = Field(default=None, description="W&B key for jobs' runs")
    wandb_dir: Path | None = Field(
        default=None, description="W&B run dir; default $WANDB_DIR or <data_dir>/wandb"
    )
    delivery_timeout_seconds: float = Field(default=10.0, description="One webhook/SMTP attempt")
    delivery_backoff_seconds: float = Field(default=10.0, description="First retry delay (doubles)")
    delivery_max_attempts: int = Field(default=12, description="Attempts before a delivery fails")
    delivery_poll_seconds: float = Field(default=1.0, description="How often workers send")
    smtp_host: str | None = Field(default=None, description="SMTP server; unset = no e-mail")
    smtp_port: int = 25
    smtp_from: str = "tuneforge@localhost"
    smtp_tls: Literal["none", "starttls", "ssl"] = "none"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    screening: bool = Field(default=True, description="Screen training data (per project: CLI)")
    # category -> regex patterns; None = the built-in policy (safety/screening.py)
    screening_policy: dict[str, list[str]] | None = None
    screening_policy_file: Path | None = Field(default=None, description="JSON policy file")
    screening_classifier: str | None = Field(
        default=None, description="module:factory of a custom Classifier (gets Settings)"
    )
    # model name (or "default") -> USD per 1M tokens: training / input / output
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: {"default": ModelPrice()})
    rate_limit_rpm: int = Field(default=0, description="Requests per minute per key (0 = off)")
    rate_limit_tpm: int = Field(default=0, description="Tokens per minute per key (0 = off)")

    # --- tests only -------------------------------------------------------------------------------
    # Never set in production. A job's trainer waits after step N until the job is asked to stop
    # (cancel, pause, worker shutdown) or `<jobs_dir>/<job id>/release-hold` exists, so the tests
    # of those paths never race a fast CPU (jobs/reporter.py, tests/helpers.py).
    test_hold_at_step: int | None = Field(
        default=None, description="Test only: hold each job after this training step"
    )

    def resolved(self) -> Settings:
        """A copy with `~` expanded and the defaults that depend on data_dir filled in."""
        data_dir = self.data_dir.expanduser().resolve()
        url = self.database_url or f"sqlite:///{data_dir / 'tuneforge.db'}"
        cache = (self.blob_cache_dir or data_dir / "cache").expanduser().resolve()
        return self.model_copy(update={"data_dir": data_dir, "database_url": url, "blob_cache_dir": cache})

    @property
    def blob_cache(self) -> Path:
        return self.blob_cache_dir or self.data_dir / "cache"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"
