"""What the app keeps for serving: the engines, each created on first use.

Creating the built-in engine imports torch and transformers (seconds), so the app only builds it
when the first completion request arrives; `tuneforge serve` starts fast and the models/list
endpoints never pay for it. A target whose base model is served by vLLM (`ModelTarget.engine`)
goes to the vLLM engine (inference/vllm_engine.py), which starts that base's server (or a full
fine-tune's own) on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tuneforge.config import Settings
from tuneforge.inference.types import ModelTarget

if TYPE_CHECKING:
    from tuneforge.inference.engine import Engine
    from tuneforge.inference.vllm_engine import VllmEngine


class Serving:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._engine: Engine | None = None
        self._vllm: VllmEngine | None = None
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        """The built-in engine."""
        with self._lock:
            if self._engine is None:
                from tuneforge.inference.engine import Engine

                self._engine = Engine(self.settings)
            return self._engine

    def vllm(self) -> VllmEngine:
        with self._lock:
            if self._vllm is None:
                from tuneforge.inference.vllm_engine import VllmEngine

                self._vllm = VllmEngine(self.settings)
            return self._vllm

    def engine_for(self, target: ModelTarget) -> Engine | VllmEngine:
        """The engine that answers `target`; a vLLM server that is not up raises Unavailable (503)
        here, before a response starts."""
        if target.engine == "vllm":
            engine = self.vllm()
            engine.require_ready(target)
            return engine
        return self.engine()

    def started(self) -> Engine | None:
        """The built-in engine if one exists (deleting a model need not start one)."""
        return self._engine

    def started_vllm(self) -> VllmEngine | None:
        return self._vllm

    def fine_tuned_names(self) -> set[str]:
        """The fine-tuned models some engine of this process holds (built-in, a vLLM adapter, or a
        full fine-tune's own vLLM server)."""
        names = self._engine.fine_tuned_names() if self._engine is not None else set()
        if self._vllm is not None:
            names |= {n for loaded in self._vllm.loaded().values() for n in loaded}
            names |= set(self._vllm.own_servers().values())
        return names

    def drop(self, model_name: str) -> None:
        """A fine-tuned model was deleted: out of every engine that may hold it."""
        for engine in (self._engine, self._vllm):
            if engine is not None:
                engine.drop(model_name)

    def close(self) -> None:
        for engine in (self._engine, self._vllm):
            if engine is not None:
                engine.close()
