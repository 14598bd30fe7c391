"""The Models API and model resolution: which model a name means for a project.

A name is a catalog base model or alias (owned by `system`), or one of the project's fine-tuned
models or checkpoints (rows of `fine_tuned_models`, written by jobs). Anything else, including
another project's fine-tuned model, is OpenAI's 404 `model_not_found`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.catalog import Catalog, model_not_found
from tuneforge.errors import PermissionDenied
from tuneforge.inference.holder import Serving
from tuneforge.inference.types import ModelTarget
from tuneforge.protocol.models import Model, ModelDeleted, ModelList
from tuneforge.store.tables import FineTunedModel


def _row(session: Session, project_id: str, name: str) -> FineTunedModel | None:
    return session.scalar(select(FineTunedModel).where(FineTunedModel.id == name,
                                                       FineTunedModel.project_id == project_id))


def list_models(session: Session, catalog: Catalog, project_id: str, organization_id: str) -> ModelList:
    data = [Model(id=n, created=catalog.created(n), owned_by="system") for n in catalog.names()]
    rows = session.scalars(select(FineTunedModel).where(FineTunedModel.project_id == project_id)
                           .order_by(FineTunedModel.created_at, FineTunedModel.id))
    data += [Model(id=r.id, created=r.created_at, owned_by=organization_id) for r in rows]
    return ModelList(data=data)


def retrieve_model(session: Session, catalog: Catalog, project_id: str, organization_id: str,
                   name: str) -> Model:
    if name in catalog:
        return Model(id=name, created=catalog.created(name), owned_by="system")
    row = _row(session, project_id, name)
    if row is None:
        raise model_not_found(name)
    return Model(id=row.id, created=row.created_at, owned_by=organization_id)


def delete_model(session: Session, serving: Serving, project_id: str, name: str) -> ModelDeleted:
    """Delete a fine-tuned model or checkpoint: its name stops resolving now, and its adapter or
    weights leave this process's engine (the files stay with the job that made them)."""
    row = _row(session, project_id, name)
    if row is None:
        if name in serving.catalog:
            raise PermissionDenied(f"You cannot delete the base model `{name}`; only fine-tuned "
                                   "models can be deleted.", param="model",
                                   code="model_not_deletable")
        raise model_not_found(name)
    session.execute(delete(FineTunedModel).where(FineTunedModel.id == row.id))
    session.commit()   # gone for every process before this one unloads it
    engine = serving.started()
    if engine is not None:
        engine.drop(name)
    return ModelDeleted(id=name)


def resolve(session: Session, catalog: Catalog, project_id: str, name: str) -> ModelTarget:
    """Name -> what the engine runs. Blocking (may build tuneforge-tiny): call off the loop."""
    if name in catalog:
        ref = catalog.resolve_base(name)
        return ModelTarget(name=name, base_source=ref.source, tokenizer_source=ref.source)
    row = _row(session, project_id, name)
    if row is None or not Path(row.path).is_dir():
        raise model_not_found(name)
    if row.kind == "full":
        return ModelTarget(name=name, base_source=row.path, tokenizer_source=row.path)
    base = row.base_model
    if base in catalog:   # tolerate a catalog name where a source was expected
        base = catalog.resolve_base(base).source
    return ModelTarget(name=name, base_source=base, tokenizer_source=row.path, adapter_path=row.path)
