"""The base-model catalog: which base models this server offers, under which names.

Configured by two Settings fields (JSON in the environment):

    TUNEFORGE_BASE_MODELS='{"Qwen/Qwen2.5-0.5B-Instruct": "Qwen/Qwen2.5-0.5B-Instruct",
                           "my-llama": "/srv/models/llama-3.2-1b"}'     # name -> HF id or local dir
    TUNEFORGE_MODEL_ALIASES='{"gpt-4o-mini-2024-07-18": "Qwen/Qwen2.5-0.5B-Instruct"}'  # alias -> name

`tuneforge-tiny` is always offered; it is built locally (no download) the first time something
resolves it, never at start-up, so the server starts fast.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config import Settings
from tuneforge.errors import NotFound

TINY_NAME = "tuneforge-tiny"


def model_not_found(name: str) -> NotFound:
    """OpenAI's exact 404 for a model that is unknown or belongs to someone else."""
    return NotFound(
        f"The model `{name}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


@dataclass(frozen=True)
class BaseModelRef:
    name: str       # as the client named it (an alias stays an alias: existing code sees its name)
    source: str     # what to load: a Hugging Face id or an absolute local directory
    base_name: str  # the catalog base model the name stands for (== name unless an alias)


class Catalog:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._tiny_dir: Path | None = None
        self._created = int(time.time())

    # ---- listing -----------------------------------------------------------------------------
    def base_names(self) -> list[str]:
        names = [TINY_NAME] + [n for n in self._settings.base_models if n != TINY_NAME]
        return names

    def aliases(self) -> dict[str, str]:
        return dict(self._settings.model_aliases)

    def names(self) -> list[str]:
        """Every name a client may use for a base model: base names, then aliases."""
        out = self.base_names()
        out += [a for a in self._settings.model_aliases if a not in out]
        return out

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def created(self, name: str) -> int:
        """`created` for the Model object: the local directory's mtime when there is one."""
        base = self._settings.model_aliases.get(name, name)
        if base == TINY_NAME:
            from tuneforge.training.tiny import tiny_dir_name  # light: no torch at import

            path = self._settings.models_dir / tiny_dir_name()
        else:
            path = Path(self._settings.base_models.get(base, ""))
        try:
            if str(path) and path.is_dir():
                return int(path.stat().st_mtime)
        except OSError:
            pass
        return self._created

    # ---- resolving ---------------------------------------------------------------------------
    def resolve_base(self, name: str) -> BaseModelRef:
        """Base model name or alias -> what to load. Unknown names: 404 model_not_found."""
        base = self._settings.model_aliases.get(name, name)
        if base == TINY_NAME:
            return BaseModelRef(name=name, source=str(self._tiny()), base_name=TINY_NAME)
        source = self._settings.base_models.get(base)
        if source is None:
            raise model_not_found(name)
        local = Path(source).expanduser()
        if local.is_dir():
            source = str(local.resolve())
        return BaseModelRef(name=name, source=source, base_name=base)

    def _tiny(self) -> Path:
        # Built once per process (and cached on disk by ensure_tiny_model); the lock keeps two
        # first requests from building it at the same time.
        with self._lock:
            if self._tiny_dir is None:
                from tuneforge.training.tiny import ensure_tiny_model

                self._tiny_dir = Path(ensure_tiny_model(self._settings.models_dir)).resolve()
            return self._tiny_dir
