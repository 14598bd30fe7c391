"""Which LoRA adapters are attached to a base model: an LRU bounded by memory.

Pure bookkeeping: the worker that owns the model does the attaching and detaching, and asks this
class what to evict. An adapter in use by a running sequence is never evicted.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


def adapter_key(model_name: str, path: str) -> str:
    """The identity of an adapter: its name, directory and file version. A model deleted and
    re-created under the same name (or rewritten in place) gets a new key, so a stale adapter can
    never answer for it."""
    p = Path(path)
    stamp = 0
    for f in ("adapter_model.safetensors", "adapter_model.bin"):
        try:
            stamp = os.stat(p / f).st_mtime_ns
            break
        except OSError:
            continue
    return f"{model_name}\x00{p.resolve()}\x00{stamp}"


def adapter_bytes(path: str) -> int:
    p = Path(path)
    return sum(f.stat().st_size for f in p.glob("adapter_model.*") if f.is_file())


@dataclass
class _Entry:
    slot: str  # the PEFT adapter name inside the model ("a1", "a2", …: no dots allowed)
    model_name: str
    nbytes: int
    pins: int = 0


class AdapterLRU:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._next = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def slot(self, key: str) -> str:
        return self._entries[key].slot

    def touch(self, key: str) -> None:
        self._entries.move_to_end(key)

    def add(self, key: str, model_name: str, nbytes: int) -> str:
        self._next += 1
        slot = f"a{self._next}"
        self._entries[key] = _Entry(slot, model_name, nbytes)
        return slot

    def remove(self, key: str) -> str:
        return self._entries.pop(key).slot

    def pin(self, key: str) -> None:
        self._entries[key].pins += 1

    def unpin(self, key: str) -> None:
        if key in self._entries:
            self._entries[key].pins -= 1

    def used_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def victims(self, incoming_bytes: int) -> list[str]:
        """Least recently used, unpinned keys to evict so that `incoming_bytes` fits."""
        over = self.used_bytes() + incoming_bytes - self.budget
        out = []
        for key, e in self._entries.items():
            if over <= 0:
                break
            if e.pins == 0:
                out.append(key)
                over -= e.nbytes
        return out

    def keys_for(self, model_name: str) -> list[str]:
        return [k for k, e in self._entries.items() if e.model_name == model_name]

    def loaded(self) -> list[str]:
        """Model names attached now, least recently used first."""
        return [e.model_name for e in self._entries.values()]
