"""Tokenizing for every engine: the model's own tokenizer and chat template, off the event loop.

Both engines take prompts as token ids rendered here, so a fine-tune is prompted with exactly the
template saved with it (the one training used), whichever engine answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from tuneforge.inference.types import ModelTarget
from tuneforge.training.render import ensure_chat_template


class Tokenizers:
    def __init__(self) -> None:
        self._tokenizers: dict[str, tuple[Any, Any, threading.Lock]] = {}
        self._lock = threading.Lock()

    def get(self, source: str) -> tuple[Any, Any, threading.Lock]:
        """(encoder, decoder, encoder lock): the decoder belongs to the builtin engine's worker
        threads; Rust tokenizers must not be used from two threads at once while settings change."""
        with self._lock:
            if source not in self._tokenizers:
                from transformers import AutoTokenizer  # here: importing it takes seconds

                enc = AutoTokenizer.from_pretrained(source)
                dec = AutoTokenizer.from_pretrained(source)
                self._tokenizers[source] = (enc, dec, threading.Lock())
            return self._tokenizers[source]

    def render_chat(self, target: ModelTarget, messages: list[dict], tools: list[dict] | None) -> list[int]:
        enc, _, lock = self.get(target.tokenizer_source)
        with lock:
            ensure_chat_template(enc)  # a model without one: training's default, as trained
            text = enc.apply_chat_template(
                messages, tools=tools or None, add_generation_prompt=True, tokenize=False
            )
            return enc(text, add_special_tokens=False)["input_ids"]

    def encode(self, target: ModelTarget, text: str) -> list[int]:
        enc, _, lock = self.get(target.tokenizer_source)
        with lock:
            ids = enc(text)["input_ids"]
        # As training renders a prompt/completion prompt: the usual BOS, never a trailing EOS.
        if ids and enc.eos_token_id is not None and ids[-1] == enc.eos_token_id:
            ids = ids[:-1]
        return ids

    def decode(self, target: ModelTarget, ids: list[int]) -> str:
        enc, _, lock = self.get(target.tokenizer_source)
        with lock:
            return enc.decode(ids, skip_special_tokens=True)

    async def prepare_chat(
        self, target: ModelTarget, messages: list[dict], tools: list[dict] | None = None
    ) -> list[int]:
        return await asyncio.to_thread(self.render_chat, target, messages, tools)

    async def prepare_text(self, target: ModelTarget, text: str) -> list[int]:
        return await asyncio.to_thread(self.encode, target, text)

    async def decode_async(self, target: ModelTarget, ids: list[int]) -> str:
        return await asyncio.to_thread(self.decode, target, ids)


class TokenizingEngine:
    """What both engines answer alike: prompts -> token ids, ids -> text, and the context length."""

    tokens: Tokenizers

    async def prepare_chat(
        self, target: ModelTarget, messages: list[dict], tools: list[dict] | None = None
    ) -> list[int]:
        return await self.tokens.prepare_chat(target, messages, tools)

    async def prepare_text(self, target: ModelTarget, text: str) -> list[int]:
        return await self.tokens.prepare_text(target, text)

    async def decode(self, target: ModelTarget, ids: list[int]) -> str:
        return await self.tokens.decode_async(target, ids)

    def context_length(self, target: ModelTarget) -> int:
        """From config.json (no weights loaded); what a prompt plus completion may not exceed."""
        cfg_path = Path(target.base_source) / "config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text())
            cfg = cfg.get("text_config", cfg)
            return int(cfg.get("max_position_embeddings") or 2048)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(target.base_source).get_text_config(decoder=True)
        return int(getattr(cfg, "max_position_embeddings", 0) or 2048)
