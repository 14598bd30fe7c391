"""The validation report the create form shows before a job is submitted.

It is `training.data.validate_file` (the same check a job's worker runs) with the chosen base
model's tokenizer, so token statistics, `auto` epochs, trained tokens and cost match training.
The cost uses the server's price table (Settings.prices through services/usage), the price a
job would be quoted.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.orm import Session

from tuneforge import pricing
from tuneforge.config import Settings
from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.services import files as files_service
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import BlobStore
from tuneforge.training import hparams


class Tokenizers:
    """Tokenizers loaded once per source (a model directory or hub id) for this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, Any] = {}

    def get(self, source: str) -> Any:
        with self._lock:
            if source not in self._cache:
                from transformers import AutoTokenizer

                self._cache[source] = AutoTokenizer.from_pretrained(source)
            return self._cache[source]


def file_report(
    session: Session,
    blobs: BlobStore,
    project_id: str,
    file_id: str,
    *,
    resolver: ModelResolver,
    settings: Settings,
    tokenizers: Tokenizers,
    model: str,
    n_epochs: int | None,
    file_param: str,
    method: str = "supervised",
) -> dict[str, Any]:
    row = files_service.get_file(session, project_id, file_id)
    if row.purpose != "fine-tune":
        raise InvalidRequest(
            f"File {file_id} has purpose '{row.purpose}'; training and "
            "validation files need purpose 'fine-tune'.",
            param=file_param,
        )
    if n_epochs is not None and not hparams.N_EPOCHS.valid(n_epochs):
        raise InvalidRequest(f"n_epochs must be {hparams.N_EPOCHS.expected}.", param="n_epochs")
    source = resolver.tokenizer_source(session, project_id, model)
    price_per_million_tokens = pricing.quote(settings, model)
    if not blobs.exists(row.blob_key):
        raise NotFound(f"No such File object: {file_id}", param="id")
    from tuneforge.training.data import validate_file

    try:
        tokenizer = tokenizers.get(source)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"Cannot load the tokenizer of {model}: {exc}", param="model") from None
    with blobs.local_file(row.blob_key) as path:
        report = validate_file(
            path,
            tokenizer=tokenizer,
            n_epochs=n_epochs,
            price_per_million_tokens=price_per_million_tokens,
            file_param=file_param,
            method=method,
        )
    return {
        "file_id": file_id,
        "filename": row.filename,
        "model": model,
        "ok": report.ok,
        **report.to_dict(),
        "price_source": f"the server's training price for {model} (TUNEFORGE_PRICES)",
    }
