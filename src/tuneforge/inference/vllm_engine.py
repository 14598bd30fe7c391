"""The vLLM engine: the same interface as the built-in one, answered by vLLM OpenAI servers.

One server per base model (`vllm_server.py`); a LoRA fine-tune is an adapter loaded into its
base's server at runtime (`/v1/load_lora_adapter`) on its first request, under an internal name
that nobody can guess (an HMAC of the adapter's identity under a per-process secret) and that
changes when the model is re-created or rewritten (`adapters.adapter_key`), so a stale adapter
never answers. At most `vllm_max_adapters` stay loaded per server (LRU; one in use is never
unloaded); a deleted model's adapter is unloaded at once.

A full fine-tune (`ModelTarget.own_server`) has weights no adapter can carry: it gets a server of
its own, started on its first request. At most `vllm_max_full_servers` run at once: beyond that the
least recently used one that answers no request is stopped (if every one is busy, a 503 with
Retry-After); deleting the model stops its server.

Prompts are rendered and tokenized here exactly as for the built-in engine (the fine-tune's own
chat template) and sent as token ids to vLLM's `/v1/completions`, streamed; its chunks become
`Delta` / `Finished` events, so chat and completions build the same responses whichever engine
answers. Leaving the event loop early closes the HTTP stream, and vLLM aborts the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import httpx

from tuneforge.config import Settings
from tuneforge.errors import Unavailable
from tuneforge.inference.adapters import adapter_key
from tuneforge.inference.tokens import Tokenizers, TokenizingEngine
from tuneforge.inference.types import (
    Delta,
    EngineError,
    Finished,
    ModelTarget,
    SamplingParams,
    TokenLogprob,
)
from tuneforge.inference.vllm_server import VllmServer

log = logging.getLogger(__name__)

_TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=30.0, pool=30.0)


@dataclass
class _Adapter:
    name: str  # the LoRA name inside vLLM
    model_name: str  # the public `ft:` name (drop on delete)
    epoch: int  # the server start it was loaded into
    pins: int = 0


@dataclass(frozen=True)
class ServerStats:
    """One server's state for GET /metrics."""

    server: str  # the base model's source, or the full fine-tune's name (its own server)
    up: bool
    restarts: int  # since tuneforge started it (an operator's server: 0)
    adapters_loaded: int
    adapter_loads: int  # /v1/load_lora_adapter calls that succeeded
    adapter_unloads: dict[str, int]  # reason ("evicted" by the LRU, "deleted" model) -> count


class VllmEngine(TokenizingEngine):
    def __init__(self, settings: Settings, tokens: Tokenizers | None = None):
        self._settings = settings
        self.tokens = tokens or Tokenizers()
        self._secret = os.urandom(32)
        self._lock = threading.Lock()
        self._servers: dict[str, VllmServer] = {}
        self._adapters: dict[str, OrderedDict[str, _Adapter]] = {}  # per server source, LRU
        self._load_locks: dict[str, threading.Lock] = {}
        # One HTTP client per event loop (a client cannot cross loops; tests and benchmarks run several).
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._own: OrderedDict[str, str] = OrderedDict()  # full fine-tunes' servers: source -> name, LRU
        self._ports_used = 0  # started servers so far (TUNEFORGE_VLLM_PORT: each its own next port)
        self.cold_loads: list[float] = []  # seconds per adapter load (benchmarks)
        self.adapter_loads: dict[str, int] = {}  # per server source (metrics)
        self.adapter_unloads: dict[str, dict[str, int]] = {}  # per server source: reason -> count

    # ---- servers -------------------------------------------------------------------------------
    def server(self, target: ModelTarget) -> VllmServer:
        retired: list[VllmServer] = []
        with self._lock:
            srv = self._servers.get(target.base_source)
            if target.own_server:
                if srv is None:
                    retired = self._make_room(target)
                self._own[target.base_source] = target.name
                self._own.move_to_end(target.base_source)
            if srv is None:
                port = self._settings.vllm_port
                if port and target.vllm_url is None:
                    port += self._ports_used
                    self._ports_used += 1
                srv = VllmServer(
                    self._settings,
                    target.base_source,
                    url=target.vllm_url,
                    port=port,
                    log_dir=self._settings.data_dir / "vllm",
                )
                self._servers[target.base_source] = srv
                self._adapters[target.base_source] = OrderedDict()
                self._load_locks[target.base_source] = threading.Lock()
        for old in retired:  # (stopping takes seconds: not on the caller's thread)
            threading.Thread(target=old.stop, name="vllm-stop", daemon=True).start()
        return srv

    def _make_room(self, target: ModelTarget) -> list[VllmServer]:
        """Full fine-tunes' servers to stop so that one more fits (lock held): LRU, idle ones."""
        out: list[VllmServer] = []
        for source in list(self._own):
            if len(self._own) < self._settings.vllm_max_full_servers:
                return out
            srv = self._servers.get(source)
            if srv is None or srv.active == 0:
                self._own.pop(source)
                out += self._remove(source)
        if len(self._own) >= self._settings.vllm_max_full_servers:
            raise Unavailable(
                f"The model `{target.name}` is not available right now: every vLLM server for full "
                f"fine-tunes ({self._settings.vllm_max_full_servers}) is answering requests. "
                "Please retry after a few seconds.",
                retry_after=self._settings.vllm_retry_after_seconds,
            )
        return out

    def _remove(self, source: str) -> list[VllmServer]:
        """Forget a server (lock held); the caller stops it."""
        self._adapters.pop(source, None)
        self._load_locks.pop(source, None)
        srv = self._servers.pop(source, None)
        return [srv] if srv is not None else []

    def own_servers(self) -> dict[str, str]:
        """Full fine-tunes with a server of their own: source -> public name (LRU order)."""
        with self._lock:
            return dict(self._own)

    def require_ready(self, target: ModelTarget) -> None:
        self.server(target).require_ready(target.name)

    def servers(self) -> dict[str, VllmServer]:
        with self._lock:
            return dict(self._servers)

    def context_length(self, target: ModelTarget) -> int:
        limit = super().context_length(target)
        if self._settings.vllm_max_model_len:
            limit = min(limit, self._settings.vllm_max_model_len)
        return limit

    # ---- adapters --------------------------------------------------------------------------------
    def _lora_name(self, key: str) -> str:
        return "tf-" + hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:32]

    def _acquire(self, srv: VllmServer, target: ModelTarget) -> tuple[str, str]:
        """(key, vLLM name) of the target's adapter, loaded and pinned. Blocking."""
        assert target.adapter_path is not None
        key = adapter_key(target.name, target.adapter_path)
        with self._load_locks[srv.source]:
            with self._lock:
                loaded = self._adapters[srv.source]
                entry = loaded.get(key)
                if entry is not None and entry.epoch != srv.epoch:  # the server restarted since
                    loaded.pop(key)
                    entry = None
                if entry is not None:
                    loaded.move_to_end(key)
                    entry.pins += 1
                    return key, entry.name
                evict = self._evictable(srv)
            for name in evict:
                self._unload(srv, name)
                self._count_unload(srv, "evicted")
            name = self._lora_name(key)
            t0 = time.perf_counter()
            try:
                r = httpx.post(
                    f"{srv.url}/v1/load_lora_adapter",
                    json={"lora_name": name, "lora_path": target.adapter_path},
                    timeout=120,
                )
            except httpx.TransportError as exc:
                srv.mark_down()
                raise self._unavailable(target) from exc
            if r.status_code != 200 and "already" not in r.text:
                raise EngineError(f"vLLM could not load the adapter of {target.name}: {r.text[:500]}")
            self.cold_loads.append(time.perf_counter() - t0)
            with self._lock:
                self.adapter_loads[srv.source] = self.adapter_loads.get(srv.source, 0) + 1
                self._adapters[srv.source][key] = _Adapter(name, target.name, srv.epoch, pins=1)
            return key, name

    async def _acquire_async(self, srv: VllmServer, target: ModelTarget) -> tuple[str, str]:
        task = asyncio.ensure_future(asyncio.to_thread(self._acquire, srv, target))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # the caller left while loading: unpin once it is loaded

            def unpin(t: asyncio.Future) -> None:
                if not t.cancelled() and t.exception() is None:
                    self._release(srv, t.result()[0])

            task.add_done_callback(unpin)
            raise

    def _evictable(self, srv: VllmServer) -> list[str]:
        """Names to unload so that one more fits (called with the lock held): LRU, unpinned."""
        loaded = self._adapters[srv.source]
        out = []
        for key in list(loaded):
            if len(loaded) < self._settings.vllm_max_adapters:
                break
            if loaded[key].pins == 0:
                entry = loaded.pop(key)
                if entry.epoch == srv.epoch:
                    out.append(entry.name)
        return out

    def _release(self, srv: VllmServer, key: str) -> None:
        with self._lock:
            entry = self._adapters[srv.source].get(key)
            if entry is not None and entry.pins > 0:
                entry.pins -= 1

    def _forget(self, srv: VllmServer, key: str) -> None:
        with self._lock:
            self._adapters[srv.source].pop(key, None)

    def _count_unload(self, srv: VllmServer, reason: str) -> None:
        with self._lock:
            counts = self.adapter_unloads.setdefault(srv.source, {})
            counts[reason] = counts.get(reason, 0) + 1

    @staticmethod
    def _unload(srv: VllmServer, name: str) -> None:
        try:
            httpx.post(f"{srv.url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=30)
        except httpx.HTTPError as exc:  # a dead server has no adapters left to unload
            log.warning("could not unload adapter %s from %s: %s", name, srv.url, exc)

    def loaded(self) -> dict[str, list[str]]:
        """Per server source: the public names of the adapters loaded (LRU order)."""
        with self._lock:
            return {src: [a.model_name for a in lru.values()] for src, lru in self._adapters.items()}

    def stats(self) -> list[ServerStats]:
        with self._lock:
            return [
                ServerStats(
                    server=self._own.get(source, source),
                    up=srv.ready,
                    restarts=srv.restarts,
                    adapters_loaded=sum(a.epoch == srv.epoch for a in self._adapters[source].values()),
                    adapter_loads=self.adapter_loads.get(source, 0),
                    adapter_unloads=dict(self.adapter_unloads.get(source, {})),
                )
                for source, srv in self._servers.items()
            ]

    def lora_names(self, model_name: str) -> list[str]:
        """The internal vLLM names of a model's loaded adapters (tests)."""
        with self._lock:
            return [
                a.name for lru in self._adapters.values() for a in lru.values() if a.model_name == model_name
            ]

    def drop(self, model_name: str, wait: float = 5.0) -> None:
        """A fine-tuned model was deleted: unload its adapter from every server, or stop its own
        server (a full fine-tune; before its files go)."""
        gone: list[tuple[VllmServer, str]] = []
        stopped: list[VllmServer] = []
        with self._lock:
            for source in [src for src, name in self._own.items() if name == model_name]:
                self._own.pop(source)
                stopped += self._remove(source)
            for source, lru in self._adapters.items():
                for key in [k for k, a in lru.items() if a.model_name == model_name]:
                    entry = lru.pop(key)
                    srv = self._servers[source]
                    if entry.epoch == srv.epoch:
                        gone.append((srv, entry.name))
        for srv, name in gone:
            self._unload(srv, name)
            self._count_unload(srv, "deleted")
        for srv in stopped:
            srv.stop()

    # ---- generation ----------------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            client = self._clients[loop] = httpx.AsyncClient(timeout=_TIMEOUT, limits=limits)
        return client

    def _unavailable(self, target: ModelTarget) -> Unavailable:
        return Unavailable(
            f"The model `{target.name}` is not available right now: its vLLM server stopped. "
            "Please retry after a few seconds.",
            retry_after=self._settings.vllm_retry_after_seconds,
        )

    async def generate(
        self, target: ModelTarget, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[Delta | Finished]:
        """Stream one sequence: `Delta`s, then one `Finished`. Raises EngineError / Unavailable."""
        srv = self.server(target)
        srv.require_ready(target.name)
        srv.active += 1  # (a full fine-tune's server answering a request is never stopped for room)
        try:
            async with aclosing(self._generate(srv, target, prompt_ids, params)) as events:
                async for ev in events:
                    yield ev
        finally:
            srv.active -= 1

    async def _generate(
        self, srv: VllmServer, target: ModelTarget, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[Delta | Finished, None]:
        for attempt in (1, 2):
            key = None
            model = await asyncio.to_thread(lambda: srv.served_name)
            if target.adapter_path is not None:
                key, model = await self._acquire_async(srv, target)
            try:
                # aclosing: a caller that leaves closes the HTTP stream now (vLLM aborts the request)
                async with aclosing(self._stream(srv, target, model, prompt_ids, params)) as events:
                    async for ev in events:
                        yield ev
                return
            except _AdapterMissing:
                # vLLM lost it (the operator's server restarted, or it was evicted meanwhile):
                # load it again, once.
                if key is not None:
                    self._forget(srv, key)
                    key = None
                if attempt == 2:
                    raise EngineError(f"vLLM does not know the adapter of {target.name}.") from None
            finally:
                if key is not None:
                    self._release(srv, key)

    async def _stream(
        self, srv: VllmServer, target: ModelTarget, model: str, prompt_ids: list[int], p: SamplingParams
    ) -> AsyncGenerator[Delta | Finished, None]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": list(prompt_ids),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "presence_penalty": p.presence_penalty,
            "frequency_penalty": p.frequency_penalty,
            "stop": list(p.stop),
            "stream": True,
            "stream_options": {"include_usage": True},
            "skip_special_tokens": True,
        }
        if p.max_tokens is not None:
            body["max_tokens"] = p.max_tokens
        if p.seed is not None:
            body["seed"] = p.seed
        if p.logprobs:
            body["logprobs"] = p.top_logprobs
        if p.ignore_eos:
            body["ignore_eos"] = True
        reason, completion, chunks = "stop", None, 0
        try:
            async with self._client().stream("POST", f"{srv.url}/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode(errors="replace")
                    if resp.status_code == 404 and model != srv.served_name:
                        raise _AdapterMissing()
                    raise EngineError(f"vLLM answered {resp.status_code}: {text[:500]}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise EngineError(f"vLLM failed: {chunk['error']}")
                    if chunk.get("usage"):
                        completion = int(chunk["usage"].get("completion_tokens") or 0)
                    for choice in chunk.get("choices") or []:
                        lps = _logprobs(choice.get("logprobs"), p.top_logprobs) if p.logprobs else []
                        if choice.get("finish_reason") == "stop" and not choice.get("text"):
                            lps = []  # the EOS token: not part of the answer, as with the built-in engine
                        chunks += 1  # one a token (the count when a server sends no usage)
                        if choice.get("text") or lps:
                            yield Delta(choice.get("text") or "", lps)
                        if choice.get("finish_reason"):
                            reason = "length" if choice["finish_reason"] == "length" else "stop"
        except httpx.TransportError as exc:
            srv.mark_down()
            raise self._unavailable(target) from exc
        yield Finished(reason, len(prompt_ids), chunks if completion is None else completion)

    def close(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for srv in servers:
            srv.stop()


class _AdapterMissing(Exception):
    pass


def _logprobs(lp: dict | None, top_n: int) -> list[TokenLogprob]:
    """vLLM's legacy-completions logprobs -> ours (bytes are the token text's UTF-8)."""
    if not lp:
        return []
    out = []
    tops = lp.get("top_logprobs") or []
    for i, (tok, val) in enumerate(zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], strict=False)):
        top: list[tuple[str, float, list[int]]] = []
        if top_n and i < len(tops) and tops[i]:
            ranked = sorted(tops[i].items(), key=lambda kv: -kv[1])[:top_n]
            top = [(t, float(v), list(t.encode("utf-8"))) for t, v in ranked]
        out.append(TokenLogprob(tok, float(val), list(tok.encode("utf-8")), top))
    return out
