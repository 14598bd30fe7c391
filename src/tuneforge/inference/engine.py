"""The inference engine: one scheduler thread per loaded model, shared by all its adapters.

A base model is loaded once, by the first request that needs it, and every LoRA fine-tune of it
runs on those same weights (adapters attached on first use, kept in an LRU). A full fine-tune is
its own model. Callers talk to it with `await engine.prepare_*` (tokenizing, off the event loop)
and `async for event in engine.generate(...)`: generation runs on the worker threads and never
blocks the event loop; leaving the loop early (a client that went away) cancels the sequence.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator

import torch

from tuneforge.config import Settings
from tuneforge.inference.adapters import adapter_key
from tuneforge.inference.tokens import Tokenizers, TokenizingEngine
from tuneforge.inference.types import Delta, EngineError, Failed, Finished, ModelTarget, SamplingParams
from tuneforge.inference.worker import ModelWorker, Sequence

MB = 1024 * 1024


def pick_device(name: str) -> tuple[torch.device, torch.dtype]:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, torch.float32


class Engine(TokenizingEngine):
    def __init__(self, settings: Settings):
        self._settings = settings
        self.device, self.dtype = pick_device(settings.inference_device)
        self._lock = threading.Lock()
        self._workers: OrderedDict[str, ModelWorker] = OrderedDict()
        self._full_names: dict[str, str] = {}  # full fine-tune name -> its worker key
        self.tokens = Tokenizers()

    # ---- generation ----------------------------------------------------------------------------
    async def generate(
        self, target: ModelTarget, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[Delta | Finished]:
        """Stream one sequence: `Delta`s, then one `Finished`. Raises EngineError on failure."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        _, dec, _ = await asyncio.to_thread(self.tokens.get, target.tokenizer_source)

        def emit(ev: object) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, ev)
            except RuntimeError:  # the caller's loop is gone: nobody is listening
                seq.cancelled = True

        seq = Sequence(
            model_name=target.name,
            prompt_ids=list(prompt_ids),
            params=params,
            tokenizer=dec,
            eos_ids=frozenset(i for i in [dec.eos_token_id] if i is not None),
            emit=emit,
            adapter_key=adapter_key(target.name, target.adapter_path) if target.adapter_path else None,
            adapter_path=target.adapter_path,
        )
        worker = self._worker_for(target)
        worker.submit(seq)
        try:
            while True:
                ev = await events.get()
                if isinstance(ev, Failed):
                    raise EngineError(ev.message)
                yield ev
                if isinstance(ev, Finished):
                    return
        finally:
            seq.cancelled = True  # no-op when finished; stops the sequence when the caller left

    def _worker_for(self, target: ModelTarget) -> ModelWorker:
        key = self._worker_key(target)
        with self._lock:
            worker = self._workers.get(key)
            if worker is not None and worker.dead:
                self._workers.pop(key)
                worker.stop()
                worker = None
            if worker is None:
                self._evict_models()
                worker = ModelWorker(
                    target.base_source,
                    device=self.device,
                    dtype=self.dtype,
                    adapter_budget_bytes=self._settings.adapter_cache_mb * MB,
                    max_batch=self._settings.max_batch_size,
                    cpu_bf16=self._settings.inference_cpu_bf16 == "auto",
                )
                worker.start()
                self._workers[key] = worker
            self._workers.move_to_end(key)
            return worker

    def _worker_key(self, target: ModelTarget) -> str:
        if target.adapter_path is not None or not _is_fine_tuned(target):
            return target.base_source
        # A full fine-tune: its own weights, keyed by name and file version so that a model
        # re-created under the same name is loaded afresh.
        key = f"{target.name}\x00{_stamp(target.base_source)}"
        self._full_names[target.name] = key
        return key

    def _evict_models(self) -> None:
        """Keep at most `max_loaded_models` models: unload the least recently used idle ones."""
        limit = max(1, self._settings.max_loaded_models)
        for key in list(self._workers):
            if len(self._workers) < limit:
                return
            worker = self._workers[key]
            if not worker.busy():
                self._workers.pop(key).stop()

    # ---- lifecycle -----------------------------------------------------------------------------
    def drop(self, model_name: str, wait: float = 5.0) -> None:
        """A fine-tuned model was deleted: detach its adapter / unload its weights everywhere."""
        with self._lock:
            key = self._full_names.pop(model_name, None)
            if key is not None and key in self._workers:
                self._workers.pop(key).stop()
            workers = list(self._workers.values())
        events = []
        for worker in workers:
            done = threading.Event()
            worker.drop(model_name, done)
            events.append(done)
        for done in events:
            done.wait(wait)

    def fine_tuned_names(self) -> set[str]:
        """The fine-tuned models in memory now (attached adapters, loaded full fine-tunes)."""
        with self._lock:
            names = set(self._full_names)
            for w in self._workers.values():
                names.update(w.loaded_adapters())
        return names

    def loaded(self) -> dict[str, list[str]]:
        """Loaded models and, per model, the fine-tunes attached to it (LRU order). For tests and
        the status page."""
        with self._lock:
            return {w.source: w.loaded_adapters() for w in self._workers.values()}

    def activity(self) -> dict[str, tuple[int, int, int]]:
        """Per loaded model: (sequences generating, sequences waiting, tokens generated since it
        was loaded). For /metrics and tests."""
        with self._lock:
            return {w.source: (*w.sequences(), w.tokens_generated) for w in self._workers.values()}

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), OrderedDict()
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(timeout=10)


def _is_fine_tuned(target: ModelTarget) -> bool:
    return target.name.startswith("ft:") or os.path.isfile(os.path.join(target.base_source, "tuneforge.json"))


def _stamp(path: str) -> int:
    for f in ("model.safetensors", "model.safetensors.index.json", "config.json"):
        try:
            return os.stat(os.path.join(path, f)).st_mtime_ns
        except OSError:
            continue
    return 0
