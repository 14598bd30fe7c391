"""What the app keeps for serving: an engine created on first use.

Creating the engine imports torch and transformers (seconds), so the app only builds it when the
first completion request arrives; `tuneforge serve` starts fast and the models/list endpoints
never pay for it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tuneforge.config import Settings

if TYPE_CHECKING:
    from tuneforge.inference.engine import Engine


class Serving:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from tuneforge.inference.engine import Engine

                self._engine = Engine(self.settings)
            return self._engine

    def started(self) -> Engine | None:
        """The engine if one exists (deleting a model need not start one)."""
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
