"""What a job's files go through after format validation and before the job is queued:
content screening (safety/screening.py) and the training cost estimate.

Called once per file by the worker's validation stage (`jobs/worker.py`). Screening can be turned
off for everyone (TUNEFORGE_SCREENING=false) or per project (`tuneforge projects set NAME
--no-screening`). The estimate (tokens x epochs with the base model's tokenizer, priced with
Settings.prices) is stored on the job with the price it was quoted; it is skipped, never fatal,
when the tokenizer is not available locally.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tuneforge import pricing
from tuneforge.config import Settings
from tuneforge.safety.screening import load_classifier, screen_file
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job, Project
from tuneforge.training import hparams

log = logging.getLogger("tuneforge.preflight")


def check_file(
    settings: Settings, factory: sessionmaker[Session], job_id: str, param: str, path: Path
) -> tuple[str, str, str] | None:
    """-> the job error (code, message, param) when `path` must fail the job, else None."""
    with factory() as s:
        job = s.get(Job, job_id)
        project = s.get(Project, job.project_id) if job is not None else None
        if job is None or project is None:
            return None
        screening = settings.screening and (project.settings or {}).get("screening", True)
        model, hyperparameters = job.model, hparams.stored(job.method)
        kind = (job.method or {}).get("type", "supervised")
        tokenizer_source = _tokenizer_source(settings, s, job)
    if screening:
        error = screen_file(path, load_classifier(settings)).job_error(param)
        if error is not None:
            return error
    if param == "training_file":
        _estimate(settings, factory, job_id, model, hyperparameters, tokenizer_source, path, kind)
    return None


def _tokenizer_source(settings: Settings, s: Session, job: Job) -> str | None:
    try:
        return ModelResolver(settings).tokenizer_source(s, job.project_id, job.base_model)
    except Exception:  # noqa: BLE001  no estimate is better than a failed validation
        log.warning("job %s: cannot resolve %s for the cost estimate", job.id, job.base_model)
        return None


def _estimate(
    settings: Settings,
    factory: sessionmaker[Session],
    job_id: str,
    model: str,
    hyperparameters: dict[str, Any],
    source: str | None,
    path: Path,
    method: str = "supervised",
) -> None:
    per_million = pricing.quote(settings, model)
    tokens = None
    if source is not None:
        try:
            from transformers import AutoTokenizer

            from tuneforge.training.data import validate_file

            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            n_epochs = hyperparameters.get("n_epochs")
            report = validate_file(
                path,
                tokenizer=tokenizer,
                n_epochs=n_epochs if isinstance(n_epochs, int) else None,
                price_per_million_tokens=per_million,
                method=method,
            )
            tokens = report.estimated_trained_tokens
        except Exception as exc:  # noqa: BLE001
            log.warning("job %s: no cost estimate (%s: %s)", job_id, type(exc).__name__, exc)
    with transaction(factory) as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        job.training_price = per_million
        job.estimated_trained_tokens = tokens
        job.estimated_cost = pricing.cost(tokens, per_million)
