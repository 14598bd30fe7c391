"""The one answer to "what does model X mean for project P".

A name is a base model or alias (tuneforge-tiny, settings, or registered in the store: see
catalog.py), or one of the project's fine-tuned models or checkpoints (`fine_tuned_models` rows,
written by jobs; a base may be a GGUF file, de-quantised on first use). Every caller asks here:
the Models API and chat/completions (`target`), job creation (`for_fine_tuning`), the dashboard's
validation report and the cost estimate (`tokenizer_source`), and the runner (`training_start`).

One `ModelResolver` per process (the app keeps it on `app.state`, the runner makes one); it reads
the store on each call, so a model added with `tuneforge models add` is offered at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.catalog import BaseModelRef, Catalog, StoredBase, model_not_found
from tuneforge.config import Settings
from tuneforge.errors import InvalidRequest, TuneforgeError
from tuneforge.inference.types import ModelTarget
from tuneforge.store.blobs import BlobStore, is_model_key, open_blobs
from tuneforge.store.tables import (
    CheckpointPermission,
    FineTunedModel,
    Job,
    StoredBaseModel,
    StoredModelAlias,
)


@dataclass(frozen=True)
class TrainingStart:
    base_model: str  # what the trainer loads: a local directory or a hub id
    init_adapter: Path | None  # a LoRA fine-tune continued from a LoRA `ft:` model
    attach_base: str  # what the job's adapters attach to when served


class ModelResolver:
    def __init__(self, settings: Settings, blobs: BlobStore | None = None):
        self.settings = settings
        self._blobs = blobs
        self._started = int(time.time())

    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:  # only model lookups need it; catalog-only users never pay for it
            self._blobs = open_blobs(self.settings)
        return self._blobs

    # ---- base models -------------------------------------------------------------------------
    def catalog(self, session: Session | None) -> Catalog:
        """The base models and aliases offered now (settings, then the store)."""
        stored: dict[str, StoredBase] = {}
        aliases: dict[str, str] = {}
        if session is not None:
            for row in session.scalars(
                select(StoredBaseModel).order_by(StoredBaseModel.created_at, StoredBaseModel.name)
            ):
                stored[row.name] = StoredBase(source=row.source, created_at=row.created_at)
            for alias in session.scalars(
                select(StoredModelAlias).order_by(StoredModelAlias.created_at, StoredModelAlias.name)
            ):
                aliases[alias.name] = alias.base_model
        return Catalog(self.settings, stored, aliases, started=self._started)

    def base(self, session: Session | None, name: str) -> BaseModelRef:
        """Base name or alias -> what to load (blocking: may build tiny or de-quantise a GGUF)."""
        return self.catalog(session).resolve_base(name)

    # ---- any model of the project -----------------------------------------------------------
    def owned_fine_tuned(self, session: Session, project_id: str, name: str) -> FineTunedModel | None:
        """The project's own fine-tuned model or checkpoint: what it may delete, export, share."""
        return session.scalar(
            select(FineTunedModel).where(FineTunedModel.id == name, FineTunedModel.project_id == project_id)
        )

    def fine_tuned(self, session: Session, project_id: str, name: str) -> FineTunedModel | None:
        """A fine-tuned model or checkpoint the project may use (chat, fine-tune on top): its own,
        or one shared with it by a checkpoint permission (gone the moment it is revoked)."""
        own = self.owned_fine_tuned(session, project_id, name)
        if own is not None:
            return own
        return session.scalar(
            select(FineTunedModel)
            .join(CheckpointPermission, CheckpointPermission.model_id == FineTunedModel.id)
            .where(FineTunedModel.id == name, CheckpointPermission.project_id == project_id)
        )

    def model_dir(self, ref: str) -> Path | None:
        """A fine-tuned model row's `path` (a blob key; a local directory in rows written before
        models were blobs) -> its directory on this machine, or None when it is gone. Blocking:
        on S3 the first use on a machine downloads it into the local cache."""
        if not is_model_key(ref):
            return Path(ref) if Path(ref).is_dir() else None
        try:
            return self.blobs.local_dir(ref)
        except FileNotFoundError:  # deleted meanwhile: the name does not resolve (a store that
            return None  # cannot be reached is an error, not a missing model)

    def base_dir(self, base: str, catalog: Catalog) -> str:
        """What an adapter attaches to: a catalog name, a stored model's key, or a source."""
        if base in catalog:  # tolerate a catalog name where a source was expected
            return catalog.resolve_base(base).source
        if is_model_key(base):  # a full fine-tune another model was trained on
            path = self.model_dir(base)
            return str(path) if path is not None else base
        return base

    def target(self, session: Session, project_id: str, name: str) -> ModelTarget:
        """Name -> what the engine runs. Blocking: call off the event loop."""
        catalog = self.catalog(session)
        if name in catalog:
            ref = catalog.resolve_base(name)
            engine, url = self._engine(catalog, (name, ref.base_name), ref.source)
            return ModelTarget(
                name=name, base_source=ref.source, tokenizer_source=ref.source, engine=engine, vllm_url=url
            )
        row = self.fine_tuned(session, project_id, name)
        path = self.model_dir(row.path) if row is not None else None
        if row is None or path is None:
            raise model_not_found(name, catalog.base_names())
        if row.kind == "full":  # its own weights: its own vLLM server, or the built-in engine
            # (The engine of the base it was trained from; a parent stored as a blob is not fetched
            # for this: its key is compared as it is.)
            parent = (
                row.base_model if is_model_key(row.base_model) else self.base_dir(row.base_model, catalog)
            )
            own = self._engine(catalog, (), parent)[0] == "vllm" and self.settings.vllm_full == "own"
            return ModelTarget(
                name=name,
                base_source=str(path),
                tokenizer_source=str(path),
                engine="vllm" if own else "builtin",
                own_server=own,
            )
        base = self.base_dir(row.base_model, catalog)
        engine, url = self._engine(catalog, (), base)
        return ModelTarget(
            name=name,
            base_source=base,
            tokenizer_source=str(path),
            adapter_path=str(path),
            engine=engine,
            vllm_url=url,
        )

    def _engine(self, catalog: Catalog, names: tuple[str, ...], source: str) -> tuple[str, str | None]:
        """(engine, operator's vLLM URL or None) for a base model asked for by one of `names`, or
        (a LoRA fine-tune) by its source: a base model named in `model_engines` / `vllm_urls` with
        that source decides, else the global `engine`."""
        s = self.settings
        explicit: dict[str, str] = {**s.model_engines, **dict.fromkeys(s.vllm_urls, "vllm")}
        for n in names:
            if n in explicit:
                return explicit[n], s.vllm_urls.get(n)
        if not names:
            for n, engine in explicit.items():
                if n in catalog and catalog.resolve_base(n).source == source:
                    return engine, s.vllm_urls.get(n)
        return s.engine, None

    def for_fine_tuning(self, session: Session, project_id: str, name: str) -> tuple[str, str]:
        """A job's `model` -> (model as shown, what training starts from: a base name or an `ft:`
        model id). Unknown: OpenAI's 400 model_not_available, plus the available base models."""
        catalog = self.catalog(session)
        if name.startswith("ft:"):
            if self.fine_tuned(session, project_id, name) is not None:
                return name, name
        elif name in catalog:
            return name, name
        raise self._not_available(name, catalog)

    def tokenizer_source(self, session: Session, project_id: str, name: str) -> str:
        """The tokenizer that counts a job's tokens (validation report, cost estimate)."""
        catalog = self.catalog(session)
        if name.startswith("ft:"):
            row = self.fine_tuned(session, project_id, name)
            path = self.model_dir(row.path) if row is not None else None
            if path is not None:
                return str(path)  # a servable model directory carries its tokenizer
        elif name in catalog:
            return catalog.resolve_base(name).source
        raise self._not_available(name, catalog)

    def training_start(self, session: Session, job: Job) -> TrainingStart:
        """What a job's run loads: its base (a catalog name) or the `ft:` model it continues."""
        if job.base_model.startswith("ft:"):
            parent = self.fine_tuned(session, job.project_id, job.base_model)
            path = self.model_dir(parent.path) if parent is not None else None
            if parent is None or path is None:
                raise TuneforgeError(
                    f"The model {job.base_model} no longer exists.", param="model", code="model_not_available"
                )
            if parent.kind == "lora":
                base = self.base_dir(parent.base_model, self.catalog(session))
                return TrainingStart(base, path, parent.base_model)
            return TrainingStart(str(path), None, parent.path)
        catalog = self.catalog(session)
        if job.base_model not in catalog:  # removed since the job was created
            raise TuneforgeError(
                f"The base model {job.base_model} no longer exists.",
                param="model",
                code="model_not_available",
            )
        source = catalog.resolve_base(job.base_model).source
        return TrainingStart(source, None, source)

    @staticmethod
    def _not_available(name: str, catalog: Catalog) -> InvalidRequest:
        return InvalidRequest(
            f"Model {name} is not available for fine-tuning or does not exist. "
            f"Available base models: {', '.join(catalog.base_names())}.",
            param="model",
            code="model_not_available",
        )
