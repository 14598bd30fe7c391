"""Shared by the training tests (and the serving tests that use the same data): tiny data files,
the chat examples several tests render or serve, greedy answers of a trained model, and a reporter
that records everything."""

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


# A conversation with a system turn and answers trained by default, not (weight 0) and explicitly
# (weight 1).
MULTI_TURN = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Five.", "weight": 0},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Four, sorry.", "weight": 1},
    ]
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


def weather_call(call_id: str = "call_1", result: str = '{"temperature": 22}') -> list[dict]:
    """An assistant turn that calls get_weather(location="Paris"), then the tool's answer."""
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


def prompt(tok, question: str) -> dict:
    """One user question through the chat template, with the generation prompt, as model inputs."""
    return tok.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )


def greedy(model, tok, question: str, max_new_tokens: int = 24) -> list[int]:
    """The token ids a (transformers) model generates, greedily, answering one user question."""
    import torch

    enc = prompt(tok, question)
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return ids[0, enc["input_ids"].shape[1] :].tolist()


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
