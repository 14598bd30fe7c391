"""One scheduler thread per loaded model: continuous batching over a shared KV cache.

The thread owns the model. Between decode steps it takes new sequences from its inbox, attaches
their LoRA adapters (attached with PEFT; each row's adapter applied by `BatchedLoRA`, or by PEFT's
`adapter_names` for LoRA kinds that does not cover), prefills them together, and merges them into the running batch; finished or cancelled rows leave the batch
between steps too. Results go back to each request's event loop through `Sequence.emit`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from tuneforge.hardware import bf16_is_fast, linears_to_bf16, model_shape
from tuneforge.inference import kvcache
from tuneforge.inference.adapters import AdapterLRU, adapter_bytes
from tuneforge.inference.detok import TextStream
from tuneforge.inference.lora_batch import BASE, BatchedLoRA
from tuneforge.inference.sampling import batch_greedy, choose, make_generator
from tuneforge.inference.types import (
    Delta,
    Failed,
    Finished,
    SamplingParams,
    TokenLogprob,
)
from tuneforge.training.render import pad_id

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Sequence:
    model_name: str
    prompt_ids: list[int]
    params: SamplingParams
    tokenizer: Any  # decodes this sequence's tokens (the model's own tokenizer)
    eos_ids: frozenset[int]
    emit: Callable[[object], None]  # thread-safe hand-off to the caller's event loop
    adapter_key: str | None = None
    adapter_path: str | None = None
    cancelled: bool = False  # set by the caller (client gone); checked between steps
    pinned: bool = False  # holds its adapter in the LRU while running
    # scheduler state
    slot: str = BASE
    max_new: int = 0
    generated: int = 0
    next_pos: int = 0
    last: int = 0
    counts: Counter = field(default_factory=Counter)
    generator: torch.Generator | None = None
    stream: TextStream | None = None


class ModelWorker(threading.Thread):
    def __init__(
        self,
        source: str,
        *,
        device: torch.device,
        dtype: torch.dtype,
        adapter_budget_bytes: int,
        max_batch: int,
        cpu_bf16: bool = False,
    ):
        super().__init__(name=f"tuneforge-model:{source[-40:]}", daemon=True)
        self.source = source
        self.device, self.dtype = device, dtype
        self.cpu_bf16 = cpu_bf16  # Settings.inference_cpu_bf16 == "auto": let the probe decide
        self.max_batch = max_batch
        self.adapters = AdapterLRU(adapter_budget_bytes)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.dead: str | None = None
        self.ready = threading.Event()
        self._pending: list[Sequence] = []
        self._running: list[Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self._model: Any = None
        self.bf16_autocast = False  # CPU: bf16 linear weights under autocast (see _load)
        self._peft = False
        self._lora: BatchedLoRA | None = None
        self._stopping = False
        self.context_length = 0
        self.tokens_generated = 0  # since this model was loaded (a Prometheus counter)

    # ---- called from other threads -------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        self.inbox.put(("seq", seq))

    def drop(self, model_name: str, done: threading.Event | None = None) -> None:
        self.inbox.put(("drop", (model_name, done)))

    def stop(self) -> None:
        self.inbox.put(("stop", None))

    def busy(self) -> bool:
        return bool(self._running or self._pending) or not self.inbox.empty()

    def sequences(self) -> tuple[int, int]:
        """(generating, waiting to start): a cheap, racy read for metrics and tests."""
        return len(self._running), len(self._pending) + self.inbox.qsize()

    def loaded_adapters(self) -> list[str]:
        return self.adapters.loaded()

    # ---- the thread ----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._load()
        except Exception as exc:  # an unloadable model fails its requests, not the server
            log.exception("loading %s failed", self.source)
            self.dead = f"could not load model {self.source}: {exc}"
        finally:
            self.ready.set()
        while not self._stopping:
            self._drain(block=not (self._running or self._pending))
            if self.dead:
                for seq in self._pending:
                    seq.emit(Failed(self.dead))
                self._pending = []
                continue
            try:
                self._admit()
                if self._running:
                    self._decode()
            except Exception as exc:
                log.exception("generation step failed on %s", self.source)
                for seq in self._running + self._pending:
                    seq.emit(Failed(f"generation failed: {exc}"))
                    self._release(seq)
                self._running, self._pending, self._cache, self._mask = [], [], None, None
        self._model = None

    def _load(self) -> None:
        model = AutoModelForCausalLM.from_pretrained(self.source, dtype=self.dtype)
        if self.device.type == "cpu" and self.dtype == torch.float32 and self.cpu_bf16:
            self.bf16_autocast = bf16_is_fast(self.device, *model_shape(model.config))
            if self.bf16_autocast:  # numbers as training computed them, half the bytes
                linears_to_bf16(model)
        self._model = model.to(self.device).eval()
        self._base = self._model
        cfg = model.config.get_text_config(decoder=True)
        self.context_length = int(getattr(cfg, "max_position_embeddings", 0) or 2048)
        eos = model.generation_config.eos_token_id if model.generation_config else None
        self.model_eos = frozenset([eos] if isinstance(eos, int) else (eos or []))

    def _drain(self, block: bool) -> None:
        while True:
            try:
                kind, item = self.inbox.get(timeout=1.0) if block else self.inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if kind == "seq":
                self._pending.append(item)
            elif kind == "drop":
                name, done = item
                self._drop(name)
                if done is not None:
                    done.set()
            elif kind == "stop":
                self._stopping = True
                for seq in self._running + self._pending:
                    seq.emit(Failed("model unloaded"))
                return

    # ---- adapters ------------------------------------------------------------------------------
    def _attach(self, seq: Sequence) -> str:
        key = seq.adapter_key
        if key in self.adapters:
            self.adapters.touch(key)
            return self.adapters.slot(key)
        nbytes = adapter_bytes(seq.adapter_path)
        for victim in self.adapters.victims(nbytes):
            self._detach(victim)
        slot = self.adapters.add(key, seq.model_name, nbytes)
        try:
            if not self._peft:
                from peft import PeftModel

                self._model = PeftModel.from_pretrained(self._base, seq.adapter_path, adapter_name=slot)
                self._model.eval()
                self._peft = True
                self._lora = BatchedLoRA(self._model)
            else:
                self._model.load_adapter(seq.adapter_path, adapter_name=slot)
                self._fix_active()
                self._lora.refresh()
        except Exception:
            self.adapters.remove(key)
            raise
        return slot

    def _detach(self, key: str) -> None:
        slot = self.adapters.remove(key)
        self._model.delete_adapter(slot)
        self._fix_active()
        self._lora.refresh()

    def _fix_active(self) -> None:
        # PEFT keeps one "active" adapter and fails when it names a deleted one, even though each
        # row's adapter is chosen by `adapter_names`: keep it pointing at a loaded one.
        names = list(self._model.peft_config)
        if names and self._model.active_adapter not in names:
            self._model.set_adapter(names[0])

    def _drop(self, model_name: str) -> None:
        """The model was deleted: stop its sequences and free its adapter now."""
        for seq in self._running + self._pending:
            if seq.model_name == model_name:
                seq.cancelled = True
                seq.emit(Failed(f"model {model_name} was deleted"))
        self._reap()
        self._pending = [s for s in self._pending if not s.cancelled]
        for key in self.adapters.keys_for(model_name):
            self._detach(key)

    # ---- scheduling ----------------------------------------------------------------------------
    def _admit(self) -> None:
        self._pending = [s for s in self._pending if not s.cancelled]
        room = self.max_batch - len(self._running)
        if room <= 0 or not self._pending:
            return
        batch, self._pending = self._pending[:room], self._pending[room:]
        ready = []
        for seq in batch:
            if not self._start(seq):
                continue
            if seq.adapter_key is not None:
                try:
                    seq.slot = self._attach(seq)
                    self.adapters.pin(seq.adapter_key)
                    seq.pinned = True
                except Exception as exc:
                    log.exception("attaching %s failed", seq.adapter_path)
                    seq.emit(Failed(f"could not load adapter for {seq.model_name}: {exc}"))
                    continue
            ready.append(seq)
        if not ready:
            return
        cache, mask, logits = self._prefill(ready)
        keep = []
        greedy = batch_greedy(logits, [s.params for s in ready])
        for i, seq in enumerate(ready):
            if self._advance(seq, logits[i], greedy[i]):
                self._release(seq)  # done after one token: never joins the batch
            else:
                keep.append(i)
        if not keep:
            return
        cache, mask = kvcache.select(cache, mask, keep) if len(keep) < len(ready) else (cache, mask)
        joined = [ready[i] for i in keep]
        if self._cache is None:
            self._cache, self._mask, self._running = cache, mask, joined
        else:
            self._cache, self._mask = kvcache.merge(self._cache, self._mask, cache, mask)
            self._running += joined

    def _start(self, seq: Sequence) -> bool:
        room = self.context_length - len(seq.prompt_ids)
        if room <= 0 or not seq.prompt_ids:
            seq.emit(Failed("prompt is empty or longer than the model's context"))
            return False
        seq.max_new = min(seq.params.max_tokens or room, room)
        seq.next_pos = len(seq.prompt_ids)
        seq.generator = make_generator(seq.params.seed, self.device)
        seq.stream = TextStream(seq.tokenizer, seq.params.stop)
        seq.eos_ids = seq.eos_ids | self.model_eos
        return True

    def _forward(self, seqs: list[Sequence], **kwargs) -> Any:
        model = self._base
        if self._peft and self.adapters.loaded():
            model = self._model
            if not self._lora.enabled:  # an adapter kind BatchedLoRA does not handle: PEFT's way
                kwargs["adapter_names"] = [s.slot for s in seqs]
        if self._lora is not None:  # the rows' adapters, applied in a few batched ops per layer
            self._lora.prepare([s.slot for s in seqs], self.device)
        # With no adapter attached the base weights answer alone (the injected LoRA layers hold
        # no adapter, so they add nothing).
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16_autocast):
            return model(use_cache=True, logits_to_keep=1, **kwargs)

    def _prefill(self, seqs: list[Sequence]):
        width = max(len(s.prompt_ids) for s in seqs)
        # Left padding, masked out; a pad that is no stop token (Llama 3 has none, SmolLM2's is EOS).
        ids = torch.full((len(seqs), width), pad_id(seqs[0].tokenizer, seqs[0].eos_ids), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s.prompt_ids) :] = torch.tensor(s.prompt_ids)
            mask[i, width - len(s.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(
            seqs, input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=DynamicCache()
        )
        return out.past_key_values, mask, out.logits[:, -1, :].float()

    def _decode(self) -> None:
        self._reap()
        if not self._running:
            return
        seqs = self._running
        ids = torch.tensor([[s.last] for s in seqs], device=self.device)
        pos = torch.tensor([[s.next_pos] for s in seqs], device=self.device)
        mask = torch.cat([self._mask, self._mask.new_ones((len(seqs), 1))], dim=1)
        out = self._forward(
            seqs, input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=self._cache
        )
        self._cache, self._mask = out.past_key_values, mask
        logits = out.logits[:, -1, :].float()  # bf16 under autocast: sample in fp32
        greedy = batch_greedy(logits, [s.params for s in seqs])
        for i, seq in enumerate(seqs):
            seq.next_pos += 1
            if self._advance(seq, logits[i], greedy[i]):
                seq.cancelled = True  # finished: leaves the batch at the next reap
        self._reap()

    def _reap(self) -> None:
        """Drop finished and cancelled rows from the batch (and their adapter pins)."""
        gone = [s for s in self._running if s.cancelled]
        if not gone:
            return
        for s in gone:
            self._release(s)
        keep = [i for i, s in enumerate(self._running) if not s.cancelled]
        if keep:
            self._cache, self._mask = kvcache.select(self._cache, self._mask, keep)
            self._running = [self._running[i] for i in keep]
        else:
            self._running, self._cache, self._mask = [], None, None

    def _advance(self, seq: Sequence, logits: torch.Tensor, greedy: int | None = None) -> bool:
        """Sample this sequence's next token (`greedy`: already picked for the whole batch) and
        report it. True when the sequence is done."""
        if seq.cancelled:
            return True
        if greedy is not None:
            token, logprobs = greedy, None
        else:
            token, logprobs = choose(logits, seq.params, seq.generator, seq.counts)
        seq.generated += 1
        self.tokens_generated += 1
        seq.last = token
        seq.counts[token] += 1
        lps = [self._logprob(seq, token, logprobs)] if logprobs is not None else []
        reason = None
        if token in seq.eos_ids and not seq.params.ignore_eos:
            text, reason = seq.stream.flush(), "stop"
        else:
            text = seq.stream.push(token)
            if seq.stream.stopped:
                reason = "stop"
            elif seq.generated >= seq.max_new:
                text, reason = text + seq.stream.flush(), "length"
        if text or lps:
            seq.emit(Delta(text, lps))
        if reason is None:
            return False
        seq.emit(Finished(reason, len(seq.prompt_ids), seq.generated))
        return True

    def _release(self, seq: Sequence) -> None:
        if seq.pinned:
            seq.pinned = False
            self.adapters.unpin(seq.adapter_key)

    def _logprob(self, seq: Sequence, token: int, logprobs: torch.Tensor) -> TokenLogprob:
        def entry(t: int) -> tuple[str, float, list[int]]:
            s = seq.tokenizer.decode([t])
            return s, float(logprobs[t]), list(s.encode("utf-8"))

        s, lp, b = entry(token)
        top = []
        if seq.params.top_logprobs:
            vals = torch.topk(logprobs, min(seq.params.top_logprobs, logprobs.shape[-1]))
            top = [entry(int(t)) for t in vals.indices]
        return TokenLogprob(s, lp, b, top)
