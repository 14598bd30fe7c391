"""Serving benchmark: our engine against plain `transformers` `generate`, side by side in one run.

    .venv/bin/python benchmarks/bench_serve.py            # (make bench-serve) the CPU case
    .venv/bin/python benchmarks/bench_serve.py --quick    # a smoke run of the harness
    .venv/bin/python benchmarks/bench_serve.py --device cuda --hidden 896 --layers 24   # GPU

Same model (a Qwen2 architecture with the tiny model's tokenizer, larger than tiny so that a step
is measurable, fixed-seed random init), same prompts, same greedy decoding, same number of output
tokens per request (EOS ignored), same process and hardware.

- generate: plain `model.generate` as a simple server runs it: one request at a time, in arrival
  order (requests that arrive together wait in a queue). TTFT = queue wait + prefill + 1st token.
- engine: `tuneforge.inference.Engine` (continuous batching, per-request sampling, KV cache), fed
  by `c` concurrent clients through its asyncio API, exactly as the HTTP routes use it.
  Scenarios: the base model; one LoRA adapter; 8 distinct LoRA adapters of the same base (each
  client its own adapter, all in one mixed batch).

Each client sends `requests_per_client` requests back to back. Throughput = output tokens of all
requests / wall time of the scenario. The LAST line printed is
`multi_adapter_ratio=<r> batching_speedup_vs_generate=<s>` where r = 8-adapter throughput /
one-adapter throughput at concurrency 8, s = engine base throughput / generate throughput at
concurrency 8. Because one short scenario on a shared machine is noisy, r is the median over
`--rounds` back-to-back (1 adapter, 8 adapters) pairs at c=8, each pair measured seconds apart.
The same pairs are also run with PEFT's own mixed-batch LoRA forward (`adapter_names`, one small
matmul per adapter per layer) instead of BatchedLoRA, for comparison (`peft_path_ratio`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 1234
PROMPTS = [
    "What is the capital of France? Please answer in one short sentence.",
    "Translate to French: hello, thank you, goodbye.",
    "Tell me a story about a cat, a dog and a bird who live in a small house.",
    "Let me think step by step. First, second, finally: what is two plus two?",
]


def build_model(path: Path, hidden: int, layers: int) -> int:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from tuneforge.training.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


# ---- the harness both engines' benchmarks share (bench_serve_vllm.py imports it) ---------------
def describe_run(device: str, **extra: str) -> None:
    """The first line: commit, CPU, library versions (what a figure in RESULTS.md must name)."""
    import torch
    import transformers

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    more = "".join(f", {k} {v}" for k, v in extra.items())
    print(
        f"bench_serve: commit {commit}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"torch {torch.__version__} (threads {torch.get_num_threads()}), transformers {transformers.__version__}"
        f"{more}, device {device}",
        flush=True,
    )


def chat_prompt_ids(model_dir: Path, prompts: list[str] = PROMPTS) -> list[list[int]]:
    """Each prompt as one user turn through the model's chat template, as token ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for p in prompts
    ]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def report(name: str, c: int, ttfts: list[float], tokens: int, wall: float) -> dict:
    row = {
        "name": name,
        "c": c,
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p99_ms": 1000 * pct(ttfts, 0.99),
        "tok_s": tokens / wall,
        "requests": len(ttfts),
    }
    print(
        f"{name:<22} c={c:<3} requests={len(ttfts):<4} TTFT p50={row['ttft_p50_ms']:8.1f} ms "
        f"p99={row['ttft_p99_ms']:8.1f} ms   output {row['tok_s']:8.1f} tok/s",
        flush=True,
    )
    return row


# ---- baseline: plain generate, one request at a time -------------------------------------------
def bench_generate(
    model_dir: Path, device: str, prompts_ids: list[list[int]], c: int, per_client: int, max_tokens: int
) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()

    class FirstToken:  # generate() calls put() with the prompt, then once per new token
        def __init__(self):
            self.calls, self.t = 0, None

        def put(self, _):
            self.calls += 1
            if self.calls == 2:
                self.t = time.perf_counter()

        def end(self):
            pass

    warm = torch.tensor([prompts_ids[0]], device=device)
    with torch.inference_mode():
        model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=2, do_sample=False)
    # c clients each submit their next request when the previous one is answered: with one request
    # served at a time, round r's c requests all arrive at the round's start and queue.
    ttfts, tokens = [], 0
    start = time.perf_counter()
    for r in range(per_client):
        arrived = time.perf_counter()
        for i in range(c):
            ids = torch.tensor([prompts_ids[(r * c + i) % len(prompts_ids)]], device=device)
            st = FirstToken()
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,
                    do_sample=False,
                    streamer=st,
                )
            ttfts.append(st.t - arrived)
            tokens += out.shape[1] - ids.shape[1]
    return report("generate (sequential)", c, ttfts, tokens, time.perf_counter() - start)


# ---- ours ------------------------------------------------------------------------------------
async def _engine_run(engine, targets, prompts_ids, c: int, per_client: int, max_tokens: int):
    from tuneforge.inference.types import Delta, Finished, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    ttfts, tokens = [], 0

    async def client(i: int):
        nonlocal tokens
        for r in range(per_client):
            t0 = time.perf_counter()
            first = None
            async for ev in engine.generate(
                targets[i % len(targets)], prompts_ids[(r * c + i) % len(prompts_ids)], params
            ):
                if first is None and isinstance(ev, Delta):
                    first = time.perf_counter()
                if isinstance(ev, Finished):
                    tokens += ev.completion_tokens
            ttfts.append((first or time.perf_counter()) - t0)

    start = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(c)])
    return ttfts, tokens, time.perf_counter() - start


def bench_engine(engine, name, targets, prompts_ids, c, per_client, max_tokens) -> dict:
    # Warm-up: load the model and attach every adapter before timing.
    asyncio.run(_engine_run(engine, targets, prompts_ids, len(targets), 1, 2))
    ttfts, tokens, wall = asyncio.run(_engine_run(engine, targets, prompts_ids, c, per_client, max_tokens))
    return report(name, c, ttfts, tokens, wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["builtin", "vllm"], default="builtin")
    ap.add_argument(
        "--vllm-python", default=str(Path(__file__).resolve().parents[1] / ".venv-vllm/bin/python")
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--control-plane-only", action="store_true", help="--engine vllm: only part 2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=48)
    # Same torch thread count for both contestants. 1 by default: on a shared 2-core machine
    # OpenMP's spinning threads collapse under contention (30x slower steps were seen here).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.engine == "vllm":  # --quick there: concurrency 1 and 8 only
        from bench_serve_vllm import main_vllm

        return main_vllm(args)
    if args.quick:
        args.hidden, args.layers, args.max_tokens, args.rounds = 128, 2, 8, 1

    import peft
    import torch

    torch.set_num_threads(args.threads)

    from tuneforge.config import Settings
    from tuneforge.inference.engine import Engine
    from tuneforge.inference.synthetic import make_random_adapter
    from tuneforge.inference.types import ModelTarget

    describe_run(args.device, peft=peft.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = root / "model"
        n = build_model(model_dir, args.hidden, args.layers)
        adapters = [
            make_random_adapter(model_dir, root / f"ad{i}", seed=SEED + i, rank=16, scale=0.05)
            for i in range(8)
        ]
        print(
            f"model: Qwen2 hidden={args.hidden} layers={args.layers} params={n / 1e6:.1f}M; "
            f"8 LoRA adapters r=16; {args.max_tokens} output tokens/request, greedy",
            flush=True,
        )

        prompts_ids = chat_prompt_ids(model_dir)
        print(f"prompt lengths: {[len(p) for p in prompts_ids]} tokens", flush=True)

        levels = [1, 8] if args.quick else [1, 8, 32]
        per = {1: 4, 8: 2, 32: 1} if not args.quick else {1: 1, 8: 1}
        rows = {}
        for c in levels:
            rows[("generate", c)] = bench_generate(
                model_dir, args.device, prompts_ids, c, per[c], args.max_tokens
            )

        engine = Engine(Settings(data_dir=root / "data", inference_device=args.device).resolved())
        base = ModelTarget("base", str(model_dir), str(model_dir))
        one = [ModelTarget("ft:one", str(model_dir), str(adapters[0]), str(adapters[0]))]
        many = [ModelTarget(f"ft:{i}", str(model_dir), str(a), str(a)) for i, a in enumerate(adapters)]
        try:
            for c in levels:
                rows[("base", c)] = bench_engine(
                    engine, "engine base", [base], prompts_ids, c, per[c], args.max_tokens
                )
            for c in levels:
                rows[("one", c)] = bench_engine(
                    engine, "engine 1 adapter", one, prompts_ids, c, per[c], args.max_tokens
                )
            for c in levels:
                rows[("many", c)] = bench_engine(
                    engine, "engine 8 adapters", many, prompts_ids, c, per[c], args.max_tokens
                )
            ratios = paired_ratios(engine, "", one, many, prompts_ids, args)
        finally:
            engine.close()
        # The same pairs through PEFT's per-adapter mixed-batch forward (what BatchedLoRA replaces).
        from tuneforge.inference import lora_batch

        lora_batch.BatchedLoRA._supported = lambda self: False
        peft_engine = Engine(Settings(data_dir=root / "data-peft", inference_device=args.device).resolved())
        try:
            peft_ratios = paired_ratios(peft_engine, " (PEFT path)", one, many, prompts_ids, args)
        finally:
            peft_engine.close()

    ratio = statistics.median(ratios)
    speedup = rows[("base", 8)]["tok_s"] / rows[("generate", 8)]["tok_s"]
    print(
        f"pair ratios at c=8: BatchedLoRA {[round(r, 2) for r in ratios]}, "
        f"PEFT path {[round(r, 2) for r in peft_ratios]}; peft_path_ratio={statistics.median(peft_ratios):.2f}"
    )
    print(f"multi_adapter_ratio={ratio:.2f} batching_speedup_vs_generate={speedup:.2f}")


def paired_ratios(engine, label, one, many, prompts_ids, args) -> list[float]:
    """8-adapter / 1-adapter throughput at c=8, measured in back-to-back pairs."""
    out = []
    for _ in range(args.rounds):
        a = bench_engine(engine, "engine 1 adapter" + label, one, prompts_ids, 8, 2, args.max_tokens)
        b = bench_engine(engine, "engine 8 adapters" + label, many, prompts_ids, 8, 2, args.max_tokens)
        out.append(b["tok_s"] / a["tok_s"])
    return out


if __name__ == "__main__":
    sys.exit(main())
