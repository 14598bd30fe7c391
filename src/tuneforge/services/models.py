"""The Models API: list, retrieve and delete the models a project may use.

What a name means (base model, alias, GGUF base, stored base, fine-tuned model or checkpoint) is
answered by services/resolver.py; anything else, including another project's fine-tuned model, is
OpenAI's 404 `model_not_found`.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.catalog import model_not_found
from tuneforge.config import MB
from tuneforge.errors import PermissionDenied
from tuneforge.inference.holder import Serving
from tuneforge.protocol.models import Model, ModelDeleted, ModelList
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import is_model_key
from tuneforge.store.tables import CheckpointPermission, FineTunedModel, Project


def list_models(
    session: Session, resolver: ModelResolver, project_id: str, organization_id: str
) -> ModelList:
    catalog = resolver.catalog(session)
    data = [Model(id=n, created=catalog.created(n), owned_by="system") for n in catalog.names()]
    rows = session.scalars(
        select(FineTunedModel)
        .where(FineTunedModel.project_id == project_id)
        .order_by(FineTunedModel.created_at, FineTunedModel.id)
    )
    data += [Model(id=r.id, created=r.created_at, owned_by=organization_id) for r in rows]
    shared = session.scalars(
        select(FineTunedModel)
        .join(CheckpointPermission, CheckpointPermission.model_id == FineTunedModel.id)
        .where(CheckpointPermission.project_id == project_id)
        .order_by(FineTunedModel.created_at, FineTunedModel.id)
    )
    data += [
        Model(id=r.id, created=r.created_at, owned_by=_owner(session, r, project_id, organization_id))
        for r in shared
    ]
    return ModelList(data=data)


def retrieve_model(
    session: Session, resolver: ModelResolver, project_id: str, organization_id: str, name: str
) -> Model:
    catalog = resolver.catalog(session)
    if name in catalog:
        return Model(id=name, created=catalog.created(name), owned_by="system")
    row = resolver.fine_tuned(session, project_id, name)  # its own, or shared with it
    if row is None:
        raise model_not_found(name, catalog.base_names())
    return Model(
        id=row.id, created=row.created_at, owned_by=_owner(session, row, project_id, organization_id)
    )


def _owner(session: Session, row: FineTunedModel, project_id: str, organization_id: str) -> str:
    if row.project_id == project_id:
        return organization_id
    owner = session.get(Project, row.project_id)
    return owner.organization_id if owner is not None else organization_id


def delete_model(
    session: Session, serving: Serving, resolver: ModelResolver, project_id: str, name: str
) -> ModelDeleted:
    """Delete a fine-tuned model or checkpoint: its name stops resolving now, and its adapter or
    weights leave this process's engine (the files stay with the job that made them)."""
    row = resolver.owned_fine_tuned(session, project_id, name)
    if row is None:
        catalog = resolver.catalog(session)
        if name in catalog:
            raise PermissionDenied(
                f"You cannot delete the base model `{name}`; only fine-tuned models can be deleted.",
                param="model",
                code="model_not_deletable",
            )
        raise model_not_found(name, catalog.base_names())
    ref = row.path
    session.execute(delete(FineTunedModel).where(FineTunedModel.id == row.id))
    session.commit()  # gone for every process (each reads the row per request) before the bytes go
    serving.drop(name)
    if is_model_key(ref):  # rows from before models were blobs point into the job's own directory
        resolver.blobs.delete_dir(ref)
    return ModelDeleted(id=name)


def sync_deleted(session: Session, serving: Serving, resolver: ModelResolver) -> list[str]:
    """Unload the fine-tuned models another process deleted (their names already 404 here: every
    request reads the store); also drop their local copies, and past Settings.blob_cache_max_mb the
    least recently used copies of models this engine has not loaded. -> the names unloaded."""
    loaded = serving.fine_tuned_names()
    gone: list[str] = []
    if loaded:
        present = set(session.scalars(select(FineTunedModel.id).where(FineTunedModel.id.in_(loaded))))
        gone = sorted(loaded - present)
        for name in gone:
            serving.drop(name)
    cached = resolver.blobs.cached_dirs()
    if cached:
        kept = set(session.scalars(select(FineTunedModel.path).where(FineTunedModel.path.in_(cached))))
        kept |= set(
            session.scalars(select(FineTunedModel.base_model).where(FineTunedModel.base_model.in_(cached)))
        )
        for key in set(cached) - kept:
            resolver.blobs.forget_local(key)
        limit = resolver.settings.blob_cache_max_mb
        if limit:  # over the cap: the least recently used copies that this engine has not loaded
            in_use = loaded - set(gone)
            keep = set(session.scalars(select(FineTunedModel.path).where(FineTunedModel.id.in_(in_use))))
            keep |= set(
                session.scalars(select(FineTunedModel.base_model).where(FineTunedModel.id.in_(in_use)))
            )
            resolver.blobs.trim_cache(limit * MB, keep=keep)
    return gone
