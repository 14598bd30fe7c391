"""The base-model catalog: which base models this server offers, under which names.

Three places name base models, read in this order (the first one that names a model wins; `models
add` refuses a clash anyway):

1. `tuneforge-tiny`, always offered: an untrained (randomly initialised) 0.9M-parameter test model,
   built locally the first time something resolves it, never at start-up. It exercises every code
   path fast; its answers are noise until it is fine-tuned.
2. Settings (JSON in the environment):

       TUNEFORGE_BASE_MODELS='{"my-llama": "/srv/models/llama-3.2-1b",      # name -> HF id,
                              "smollm2": "/srv/SmolLM2-135M-Instruct.Q4_1.gguf"}'  # dir or .gguf
       TUNEFORGE_MODEL_ALIASES='{"gpt-4o-mini-2024-07-18": "my-llama"}'   # alias -> base name

3. The store: base models and aliases registered with `tuneforge models add NAME SOURCE --alias A`.

A `Catalog` is a snapshot of those names (the resolver builds one per request from the store);
`load_source` turns a configured source into what transformers loads: the tiny model's directory,
a GGUF file's de-quantised cache directory (gguf.py), an absolute local directory, or a hub id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config import Settings
from tuneforge.errors import NotFound
from tuneforge.gguf import ensure_hf_dir, is_gguf

TINY_NAME = "tuneforge-tiny"
TINY_DESCRIPTION = "an untrained 0.9M-parameter test model (random weights)"


def model_not_found(name: str, available: list[str] | None = None) -> NotFound:
    """OpenAI's exact 404 for a model that is unknown or belongs to someone else, plus the base
    models this server offers (so a typo is easy to fix)."""
    message = f"The model `{name}` does not exist or you do not have access to it."
    if available:
        message += f" Available base models: {', '.join(available)}."
    return NotFound(message, code="model_not_found")


@dataclass(frozen=True)
class BaseModelRef:
    name: str  # as the client named it (an alias stays an alias: existing code sees its name)
    source: str  # what to load: a Hugging Face id or an absolute local directory
    base_name: str  # the catalog base model the name stands for (== name unless an alias)


@dataclass(frozen=True)
class StoredBase:
    source: str
    created_at: int


class Catalog:
    """Every base-model name: the tiny model, then settings, then the store (a snapshot)."""

    def __init__(
        self,
        settings: Settings,
        stored: Mapping[str, StoredBase] | None = None,
        stored_aliases: Mapping[str, str] | None = None,
        *,
        started: int | None = None,
    ):
        self._settings = settings
        self._created = started if started is not None else int(time.time())
        self._bases: dict[str, str] = {TINY_NAME: TINY_NAME}
        self._bases.update({n: s for n, s in settings.base_models.items() if n != TINY_NAME})
        self._stored_created: dict[str, int] = {}
        for name, row in (stored or {}).items():
            if name not in self._bases:
                self._bases[name] = row.source
                self._stored_created[name] = row.created_at
        self._aliases = {a: b for a, b in settings.model_aliases.items() if a not in self._bases}
        for alias, base in (stored_aliases or {}).items():
            if alias not in self._bases and alias not in self._aliases:
                self._aliases[alias] = base

    # ---- listing -----------------------------------------------------------------------------
    def base_names(self) -> list[str]:
        return list(self._bases)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def names(self) -> list[str]:
        """Every name a client may use for a base model: base names, then aliases."""
        return self.base_names() + list(self._aliases)

    def __contains__(self, name: str) -> bool:
        return name in self._bases or name in self._aliases

    def created(self, name: str) -> int:
        """`created` for the Model object: when it was registered, else its directory's mtime."""
        base = self._aliases.get(name, name)
        if base in self._stored_created:
            return self._stored_created[base]
        if base == TINY_NAME:
            from tuneforge.training.tiny import tiny_dir_name  # light: no torch at import

            path = self._settings.models_dir / tiny_dir_name()
        else:
            path = Path(self._bases.get(base, ""))
        try:
            if str(path) and path.exists():
                return int(path.stat().st_mtime)
        except OSError:
            pass
        return self._created

    # ---- resolving ---------------------------------------------------------------------------
    def configured_source(self, name: str) -> tuple[str, str] | None:
        """Name or alias -> (base name, source as configured), or None when unknown."""
        base = self._aliases.get(name, name)
        source = self._bases.get(base)
        return None if source is None else (base, source)

    def resolve_base(self, name: str) -> BaseModelRef:
        """Base model name or alias -> what to load (may build the tiny model or de-quantise a
        GGUF: blocking). Unknown names: 404 model_not_found with the available base models."""
        found = self.configured_source(name)
        if found is None:
            raise model_not_found(name, self.base_names())
        base, source = found
        return BaseModelRef(name=name, source=load_source(self._settings, source), base_name=base)


def load_source(settings: Settings, source: str) -> str:
    """A configured source -> what transformers loads (a local directory or a hub id)."""
    if source == TINY_NAME:
        from tuneforge.training.tiny import ensure_tiny_model

        return str(Path(ensure_tiny_model(settings.models_dir)).resolve())
    local = Path(source).expanduser()
    if is_gguf(source) and local.is_file():
        return str(ensure_hf_dir(settings.models_dir, local).resolve())
    if local.is_dir():
        return str(local.resolve())
    return source
