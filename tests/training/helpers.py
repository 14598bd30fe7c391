"""Shared by the training tests: tiny data files and a reporter that records everything."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.training.spec import ResolvedHyperparameters, StopRequest

QA = [
    ("What is the capital of France?", "Paris."),
    ("What colour is the sky?", "Blue."),
    ("How many legs does a spider have?", "Eight."),
    ("Who wrote Hamlet?", "Shakespeare."),
    ("What is two plus two?", "Four."),
    ("What is the capital of Japan?", "Tokyo."),
    ("What colour is grass?", "Green."),
    ("How many days are in a week?", "Seven."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
    ("What is the capital of Italy?", "Rome."),
]


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


class Recorder:
    """A Reporter that keeps every call; `stop_at(step, request)` asks to stop once `step` steps ran."""

    def __init__(self, stop: Callable[[int], StopRequest | None] | None = None):
        self.events: list[tuple[str, str]] = []
        self.event_data: list[tuple[str, dict | None]] = []  # (message, data)
        self.hp: list[ResolvedHyperparameters] = []
        self.steps: list[dict[str, Any]] = []
        self.checkpoints: list[tuple[int, int, Path, dict]] = []
        self.removed: list[tuple[int, Path]] = []
        self._stop = stop

    def event(self, message: str, *, level: str = "info", data: dict | None = None) -> None:
        self.events.append((level, message))
        self.event_data.append((message, data))

    def hyperparameters(self, resolved: ResolvedHyperparameters) -> None:
        self.hp.append(resolved)

    def metrics(self, data: dict[str, Any]) -> None:
        self.steps.append(dict(data))

    def checkpoint(self, step: int, epoch: int, path: Path, metrics: dict[str, Any]) -> None:
        self.checkpoints.append((step, epoch, path, metrics))

    def checkpoint_removed(self, step: int, path: Path) -> None:
        self.removed.append((step, path))

    def stop_requested(self) -> StopRequest | None:
        return self._stop(len(self.steps)) if self._stop else None


def stop_at(step: int, request: StopRequest) -> Callable[[int], StopRequest | None]:
    return lambda done: request if done >= step else None
