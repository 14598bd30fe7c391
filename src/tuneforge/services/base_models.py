"""Base models registered in the store (`tuneforge models add|list|remove`).

The source is checked before it gets here (model_sources.check_source: that needs transformers);
this module keeps the naming rules: a name is used once across tuneforge-tiny, the settings
(TUNEFORGE_BASE_MODELS / TUNEFORGE_MODEL_ALIASES) and the store, and `ft:` is reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.catalog import TINY_DESCRIPTION, TINY_NAME
from tuneforge.config import Settings
from tuneforge.errors import Conflict, InvalidRequest, NotFound
from tuneforge.ids import now
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.tables import StoredBaseModel, StoredModelAlias


@dataclass(frozen=True)
class BaseModelInfo:
    name: str
    source: str
    origin: str  # "builtin" | "settings" | "store"
    aliases: tuple[str, ...]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "origin": self.origin,
            "aliases": list(self.aliases),
            "note": self.note,
        }


def _check_name(name: str, param: str) -> None:
    if not name or name != name.strip() or any(c.isspace() for c in name):
        raise InvalidRequest(
            f"Invalid model name {name!r}: it must be non-empty, without spaces.", param=param
        )
    if name.startswith("ft:"):
        raise InvalidRequest(f"Invalid model name {name!r}: `ft:` names are fine-tuned models.", param=param)
    if len(name) > 256:
        raise InvalidRequest(f"Invalid model name {name!r}: at most 256 characters.", param=param)


def add(
    session: Session, settings: Settings, name: str, source: str, kind: str, aliases: list[str]
) -> BaseModelInfo:
    """Register a checked source under `name` (and its aliases); refuse any name in use."""
    catalog = ModelResolver(settings).catalog(session)
    names = [name, *aliases]
    for i, n in enumerate(names):
        _check_name(n, "name" if i == 0 else "alias")
        if n in catalog or names.index(n) != i:
            raise Conflict(
                f"The model name `{n}` is already in use; choose another or remove it "
                "first (`tuneforge models remove`, or edit TUNEFORGE_BASE_MODELS / "
                "TUNEFORGE_MODEL_ALIASES).",
                param="name",
                code="model_exists",
            )
    ts = now()
    session.add(StoredBaseModel(name=name, source=source, kind=kind, created_at=ts))
    session.flush()
    for alias in aliases:
        session.add(StoredModelAlias(name=alias, base_model=name, created_at=ts))
    session.flush()
    return BaseModelInfo(name, source, "store", tuple(aliases))


def list_all(session: Session, settings: Settings) -> list[BaseModelInfo]:
    """Every base model with its aliases, in catalog order."""
    catalog = ModelResolver(settings).catalog(session)
    stored = set(session.scalars(select(StoredBaseModel.name)))
    aliases: dict[str, list[str]] = {}
    for alias, base in catalog.aliases().items():
        aliases.setdefault(base, []).append(alias)
    out = []
    for name in catalog.base_names():
        base, source = catalog.configured_source(name) or (name, "")
        origin = "builtin" if name == TINY_NAME else "store" if name in stored else "settings"
        out.append(
            BaseModelInfo(
                name,
                source,
                origin,
                tuple(aliases.get(name, ())),
                TINY_DESCRIPTION if name == TINY_NAME else None,
            )
        )
    return out


def remove(session: Session, settings: Settings, name: str) -> str:
    """Remove a registered base model (with its aliases) or one registered alias.
    Fine-tuned models made from it keep working: they record the directory they trained on."""
    if session.get(StoredBaseModel, name) is not None:
        session.execute(delete(StoredModelAlias).where(StoredModelAlias.base_model == name))
        session.execute(delete(StoredBaseModel).where(StoredBaseModel.name == name))
        return "base model"
    if session.get(StoredModelAlias, name) is not None:
        session.execute(delete(StoredModelAlias).where(StoredModelAlias.name == name))
        return "alias"
    if name in ModelResolver(settings).catalog(session):
        raise InvalidRequest(
            f"`{name}` is not registered in the store (it is built in or set by "
            "TUNEFORGE_BASE_MODELS / TUNEFORGE_MODEL_ALIASES); change it there.",
            param="name",
            code="model_not_deletable",
        )
    raise NotFound(f"No base model or alias named `{name}`.", param="name", code="model_not_found")
