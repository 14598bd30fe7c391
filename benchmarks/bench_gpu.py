"""GPU benchmark: our trainer vs TRL SFTTrainer, our serving engine vs plain generate, on CUDA.

    bash benchmarks/gpu.sh                                # (make bench-gpu) on the GPU machine
    python benchmarks/bench_gpu.py --cpu-smoke            # the same script, tiny sizes, on CPU

Models: random-weight Qwen2.5-0.5B and Qwen2.5-1.5B architectures (their published configs,
written below: 151,936-word vocabulary, GQA, tied embeddings), built here with a fixed seed and
saved in bf16; the tokenizer is tuneforge-tiny's (its 1k ids are a subset of the vocabulary), so
nothing is downloaded. --cpu-smoke shrinks every size (a 2-layer model of the same family, short
sequences, few requests) so the whole script runs end to end on a CPU in about a minute.

Training (each contestant in its own process, so peak memory does not mix): the same chat data
(lengths log-normal around ~700 tokens, cut at 2048), seed, examples per optimizer step (16),
learning rate, one epoch, LoRA r=16 alpha=32 on all linear layers.
- ours: `tuneforge.training.train` on CUDA (bf16, packing, fused loss, auto checkpointing);
- trl: `SFTTrainer` with its defaults for everything else (bf16, gradient checkpointing, padding,
  8 per device x 2 accumulation = 16 per step);
- ours full: a full fine-tune of the 0.5B shape (fp32 master weights, bf16 autocast).
Tokens/s = real tokens (no padding) of the timed steps / their seconds; the first WARMUP_STEPS
steps are not timed (allocation, kernel selection). Tokens per step are the run's mean (examples
are shuffled). MFU = model FLOPs / seconds / 989 TFLOP/s (H200 dense bf16); model FLOPs per token:
LoRA 4*N_matmul + 6*N_lora, full 6*N, N_matmul the non-embedding weights plus the output layer on
label positions only (the work the step needs, whoever computes more), plus causal attention
6*L*d*n per token of an n-token example. Peak memory: torch.cuda.max_memory_allocated (CPU:
the process's max RSS). Eval loss: the held-out set's mean assistant-token cross-entropy,
computed the same way for both after training (bench_train.eval_loss).

Serving (one process): generate = plain `model.generate`, one request at a time (bf16 on CUDA);
engine = tuneforge's continuous-batching engine through its asyncio API; base model, one adapter,
8 adapters (each client its own). TTFT p50/p99 and output tokens/s at concurrency 1/8/32, greedy,
EOS ignored (bench_serve's harness).

The table is printed last, then one line:
`gpu_lora_mfu=<x> gpu_train_speedup_vs_trl=<y> gpu_serve_speedup_vs_generate=<z>`
(LoRA MFU at the 1.5B shape; our tokens/s over TRL's at the 1.5B shape; engine base tokens/s over
generate's at concurrency 8). A stage that fails prints its error and `nan` in its cells: one
broken contestant must not cost the whole device run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serve  # noqa: E402  (the benchmarks folder is not a package)
import bench_train  # noqa: E402
from _harness import (  # noqa: E402
    TRL_QUIET,
    Listener,
    collect,
    git_commit,
    peak_rss_mb,
    read_jsonl,
    spawn,
    trl_lora,
    worker_config,
    write_result,
)

SEED = 1234
H200_PEAK_FLOPS = 989e12
WARMUP_STEPS = 3
TRAIN_BUDGET_S = 330  # the training stages' share of gpu.sh's 8 minutes (serving takes ~2)

# The published Hugging Face configs of Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B (shapes only).
QWEN25 = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
}  # fmt: skip
QWEN25_COMMON = dict(
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)
# --cpu-smoke: the same family, every dimension shrunk (still GQA, tied, a vocabulary > tokenizer).
SMOKE = {
    "0.5b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}  # fmt: skip

TRAIN_ROWS = ["train lora 1.5b ours", "train lora 1.5b trl", "train full 0.5b ours"]
SERVE_ROWS = [
    *(f"serve generate c={c}" for c in (1, 8, 32)),
    *(f"serve engine base c={c}" for c in (1, 8, 32)),
    "serve engine 1 adapter c=8",
    *(f"serve engine 8 adapters c={c}" for c in (1, 8, 32)),
]
ROWS = TRAIN_ROWS + SERVE_ROWS


def sizes(smoke: bool) -> dict:
    if smoke:
        return dict(
            max_len=128, n_train=24, n_eval=4, median_words=12, batch=8, per_device=4, accum=2,
            max_tokens=4, per_client={1: 1, 8: 1, 32: 1}, prompt_words=(8, 30),
        )  # fmt: skip
    return dict(
        max_len=2048, n_train=800, n_eval=16, median_words=110, batch=16, per_device=8, accum=2,
        max_tokens=64, per_client={1: 3, 8: 1, 32: 1}, prompt_words=(40, 250),
    )  # fmt: skip


# --- models and data ----------------------------------------------------------------------------


def build_qwen(path: Path, shape: str, smoke: bool, device: str) -> int:
    """A random-weight Qwen2.5 of `shape` with the tiny tokenizer, saved in bf16 (fp32 for the
    CPU smoke run: CPU serving computes in fp32). Built on `device`: a 1.5B init on the GPU takes
    a second, on CPU a minute."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from tuneforge.training.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    dims = (SMOKE if smoke else QWEN25)[shape]
    common = dict(QWEN25_COMMON, vocab_size=4096) if smoke else QWEN25_COMMON
    config = Qwen2Config(
        **dims, **common, bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(SEED)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model = model.to(torch.float32 if smoke else torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return n


def make_adapters(base_dir: Path, root: Path, n: int, rank: int = 16, scale: float = 0.02) -> list[Path]:
    """`n` random LoRA adapters of one base, loaded once (synthetic.make_random_adapter loads the
    base per adapter: 8 loads of a 0.5B model are half a minute)."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
        LoraConfig(r=rank, lora_alpha=rank * 2, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]),
    )
    out = []
    for i in range(n):
        gen = torch.Generator().manual_seed(SEED + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
        d = root / f"adapter{i}"
        model.save_pretrained(d)
        for f in base_dir.iterdir():
            if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
                shutil.copy(f, d / f.name)
        meta = {
            "format": 1,
            "kind": "lora",
            "base_model": str(base_dir),
            "step": 1,
            "epoch": 1,
            "metrics": {},
        }
        (d / "tuneforge.json").write_text(json.dumps(meta))
        out.append(d)
    return out


def write_data(path: Path, n: int, median_words: int, seed: int) -> None:
    """Chat examples from bench_train's tasks with longer texts: log-normal word counts around
    `median_words` (a task's answer repeats its request, so ~6 tokens per word in all)."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            words = max(1, min(20 * median_words, int(rng.lognormvariate(math.log(median_words), 0.6))))
            question, answer = bench_train._task(rng, words)
            messages = [
                {"role": "system", "content": rng.choice(bench_train.SYSTEMS)},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            fh.write(json.dumps({"messages": messages}) + "\n")


def train_flops(model_dir: Path, method: str, lengths: list[int], labels: int, lora_params: int) -> float:
    """Model FLOPs of one pass over the data (module docstring)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # tied: counted once
    body = total - emb - (0 if config.tie_word_embeddings else head)
    tokens = sum(lengths)
    # causal attention, forward 2*n^2*d per layer (QK^T and AV over n^2/2 pairs), x3 with backward
    attention = 6 * config.num_hidden_layers * config.hidden_size * sum(n * n for n in lengths)
    if method == "full":
        return 6 * body * tokens + 6 * head * labels + attention
    return 4 * body * tokens + 4 * head * labels + 6 * lora_params * tokens + attention


# --- training contestants (each in its own process) ---------------------------------------------


def _peak_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return peak_rss_mb() / 1024


def run_ours(cfg: dict) -> dict:
    from tuneforge.training import train
    from tuneforge.training.spec import Hyperparameters, TrainSpec

    steps: list[tuple[int, float]] = []

    class Collect(Listener):
        def throughput(self, tokens, seconds):  # per optimizer step (trainer's optional hook)
            steps.append((tokens, seconds))

    base_lr = bench_train._our_base_lr(cfg["method"])
    spec = TrainSpec(
        base_model=cfg["model_dir"],
        training_file=Path(cfg["train"]),
        output_dir=Path(cfg["workdir"]) / cfg["name"].replace(" ", "_"),
        method=cfg["method"],
        hyperparameters=Hyperparameters(
            n_epochs=1, batch_size=cfg["batch"], learning_rate_multiplier=cfg["lr"] / base_lr
        ),
        seed=SEED,
        lora_rank=16,
        lora_alpha=32,
        max_seq_len=cfg["max_len"],
        keep_checkpoints=1,
        device=cfg["device"],
        torch_compile=cfg["compile"],
    )
    reporter = Collect()
    result = train(spec, reporter)
    assert result.status == "succeeded", result
    peak = _peak_gb(cfg["device"])
    timed = steps[min(WARMUP_STEPS, len(steps) - 1) :]
    model, tok = bench_train._load_servable(Path(result.final_dir))
    model = model.to(cfg["device"])
    loss = bench_train.eval_loss(model, tok, read_jsonl(Path(cfg["eval"])), cfg["max_len"])
    trainable = _lora_params(cfg) if cfg["method"] == "lora" else 0
    del model
    return {
        "steps": len(steps),
        "timed_steps": len(timed),
        "timed_seconds": sum(s for _, s in timed),
        "peak_gb": peak,
        "eval_loss": loss,
        "lora_params": trainable,
        "notes": [e for e in reporter.events if e.startswith(("GPU:", "Training finished"))],
    }


def _lora_params(cfg: dict) -> int:
    """Trainable LoRA weights for r=16 on all linear layers, as trained (counted on a meta model)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg["model_dir"]))
    peft_model = get_peft_model(model, trl_lora(16))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def run_trl(cfg: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = cfg["device"].startswith("cuda")
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    trainer = SFTTrainer(
        model=cfg["model_dir"],
        args=SFTConfig(
            output_dir=str(Path(cfg["workdir"]) / "trl"),
            num_train_epochs=1,
            per_device_train_batch_size=cfg["per_device"],
            gradient_accumulation_steps=cfg["accum"],
            learning_rate=cfg["lr"],
            seed=SEED,
            max_length=cfg["max_len"],
            use_cpu=not cuda,
            **TRL_QUIET,
        ),
        train_dataset=Dataset.from_list(read_jsonl(Path(cfg["train"]))),
        processing_class=tokenizer,
        peft_config=trl_lora(16),
        callbacks=[StepTimer()],
    )
    trainer.train()
    peak = _peak_gb(cfg["device"])
    timed = times[min(WARMUP_STEPS, len(times) - 1) :]
    model = trainer.model.float()  # evaluated in fp32, as ours is (bench_train._load_servable)
    loss = bench_train.eval_loss(model, tokenizer, read_jsonl(Path(cfg["eval"])), cfg["max_len"])
    return {
        "steps": len(times),
        "timed_steps": len(timed),
        "timed_seconds": sum(timed),
        "peak_gb": peak,
        "eval_loss": loss,
        "notes": [f"TRL defaults: gradient_checkpointing={trainer.args.gradient_checkpointing}, "
                  f"bf16={trainer.args.bf16}, padding_free={trainer.args.padding_free}"],
    }  # fmt: skip


def worker(kind: str, cfg_path: Path) -> None:
    cfg = worker_config(cfg_path, SEED)
    result = run_ours(cfg) if kind == "ours" else run_trl(cfg)
    write_result(cfg_path.with_suffix(".out.json"), result)


def contest(name: str, kind: str, cfg: dict, root: Path, timeout: float | None) -> dict:
    """Runs one contestant in its own process; its result (or its error) as a row."""
    path = root / f"{name.replace(' ', '_')}.json"
    path.write_text(json.dumps(dict(cfg, name=name)))
    t0 = time.perf_counter()
    result = collect(
        name, spawn(__file__, "--worker", kind, str(path)), path.with_suffix(".out.json"), timeout
    )
    if result is None:
        return {"name": name, "error": "failed"}
    wall = time.perf_counter() - t0
    print(f"{name}: {result['steps']} steps in {wall:.0f} s (process), {result.get('notes')}", flush=True)
    return dict(result, name=name)


def train_row(result: dict, tokens_per_pass: int, flops_per_pass: float, peak: float) -> dict:
    if "error" in result:
        return {"name": result["name"]}
    per_step_tokens = tokens_per_pass / result["steps"]
    per_step_flops = flops_per_pass / result["steps"]
    seconds = result["timed_seconds"]
    return {
        "name": result["name"],
        "tok_s": per_step_tokens * result["timed_steps"] / seconds,
        "mfu": per_step_flops * result["timed_steps"] / seconds / peak,
        "peak_gb": result["peak_gb"],
        "eval_loss": result["eval_loss"],
    }


# --- serving ------------------------------------------------------------------------------------


def serve_rows(model_dir: Path, root: Path, device: str, sz: dict) -> list[dict]:
    import torch
    from transformers import AutoTokenizer

    from tuneforge.config import Settings
    from tuneforge.inference.engine import Engine
    from tuneforge.inference.types import ModelTarget

    adapters = make_adapters(model_dir, root, 8)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(SEED)
    lo, hi = sz["prompt_words"]
    prompts = []
    for _ in range(8):
        q, _a = bench_train._task(rng, rng.randint(lo, hi))
        ids = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        prompts.append(ids)
    print(f"serving: prompts of {sorted(len(p) for p in prompts)} tokens, {sz['max_tokens']} out", flush=True)
    per, mt = sz["per_client"], sz["max_tokens"]
    rows = []
    for c in (1, 8, 32):
        r = bench_serve.bench_generate(model_dir, device, prompts, c, per[c], mt)
        rows.append(dict(r, name=f"serve generate c={c}"))
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    engine = Engine(Settings(data_dir=root / "serve-data", inference_device=device).resolved())
    base = [ModelTarget("base", str(model_dir), str(model_dir))]
    one = [ModelTarget("ft:one", str(model_dir), str(adapters[0]), str(adapters[0]))]
    many = [ModelTarget(f"ft:{i}", str(model_dir), str(a), str(a)) for i, a in enumerate(adapters)]
    try:
        for c in (1, 8, 32):
            r = bench_serve.bench_engine(engine, "engine base", base, prompts, c, per[c], mt)
            rows.append(dict(r, name=f"serve engine base c={c}"))
        r = bench_serve.bench_engine(engine, "engine 1 adapter", one, prompts, 8, per[8], mt)
        rows.append(dict(r, name="serve engine 1 adapter c=8"))
        for c in (1, 8, 32):
            r = bench_serve.bench_engine(engine, "engine 8 adapters", many, prompts, c, per[c], mt)
            rows.append(dict(r, name=f"serve engine 8 adapters c={c}"))
    finally:
        engine.close()
    return rows


# --- the run ------------------------------------------------------------------------------------


def environment(device: str) -> str:
    import torch
    import transformers

    parts = [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    for name in ("peft", "trl", "liger_kernel", "flash_attn"):
        try:
            from importlib.metadata import version

            parts.append(f"{name} {version(name.replace('_', '-'))}")
        except Exception:
            parts.append(f"{name} -")
    if device.startswith("cuda"):
        parts.insert(
            0,
            f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)",
        )
    else:
        parts.insert(0, f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}")
    return f"commit {git_commit() or '?'}; " + ", ".join(parts)


def fmt(v, spec: str) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(rows: dict[str, dict]) -> None:
    print(
        f"{'row':<30} {'tok/s':>10} {'MFU':>7} {'peak GB':>8} {'eval loss':>9} {'TTFT p50 ms':>11} {'p99 ms':>9}"
    )
    for name in ROWS:
        r = rows.get(name, {})
        print(
            f"{name:<30} {fmt(r.get('tok_s'), '10.1f')} {fmt(r.get('mfu'), '7.1%')} "
            f"{fmt(r.get('peak_gb'), '8.2f')} {fmt(r.get('eval_loss'), '9.4f')} "
            f"{fmt(r.get('ttft_p50_ms'), '11.1f')} {fmt(r.get('ttft_p99_ms'), '9.1f')}"
        )


def ratio(a, b) -> float:
    return a / b if a and b else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU, end to end")
    ap.add_argument("--compile", action="store_true", help="our trainer with torch.compile")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "CFG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], Path(args.worker[1]))

    import torch

    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu-smoke on a CPU")
    if smoke:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    sz = sizes(smoke)
    peak = H200_PEAK_FLOPS if not smoke else _cpu_peak()
    started = time.perf_counter()
    print(f"bench_gpu: {environment(device)}; peak {peak / 1e12:.3g} TFLOP/s", flush=True)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {}
        for shape in ("0.5b", "1.5b"):
            dirs[shape] = root / f"qwen2.5-{shape}"
            n = build_qwen(dirs[shape], shape, smoke, device)
            print(
                f"built Qwen2.5-{shape} shape{' (smoke)' if smoke else ''}: {n / 1e6:.1f}M params", flush=True
            )
        train_path, eval_path = root / "train.jsonl", root / "eval.jsonl"
        write_data(train_path, sz["n_train"], sz["median_words"], SEED)
        write_data(eval_path, sz["n_eval"], sz["median_words"], SEED + 1)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(dirs["1.5b"])
        examples = bench_train.read_jsonl(train_path)
        lengths = bench_train.rendered_lengths(tok, examples, sz["max_len"])
        labels = bench_train.label_tokens(tok, examples, sz["max_len"])
        print(
            f"data: {len(lengths)} examples, {sum(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}, "
            f"max {max(lengths)}), {labels} label tokens; {time.perf_counter() - started:.0f} s so far",
            flush=True,
        )
        base_cfg = dict(
            train=str(train_path), eval=str(eval_path), workdir=str(root), device=device,
            max_len=sz["max_len"], batch=sz["batch"], per_device=sz["per_device"], accum=sz["accum"],
            compile=args.compile, threads=torch.get_num_threads() if smoke else None,
        )  # fmt: skip
        lora = dict(base_cfg, model_dir=str(dirs["1.5b"]), method="lora", lr=2e-4)
        full = dict(base_cfg, model_dir=str(dirs["0.5b"]), method="full", lr=1e-5)
        lora_n = _lora_params(lora)
        for name, kind, cfg in (
            ("train lora 1.5b ours", "ours", lora),
            ("train lora 1.5b trl", "trl", lora),
            ("train full 0.5b ours", "ours", full),
        ):
            # On the device a stuck contestant must not eat the 8-minute run (smoke: no limit).
            left = None if smoke else max(30.0, TRAIN_BUDGET_S - (time.perf_counter() - started))
            result = contest(name, kind, cfg, root, left)
            method = cfg["method"]
            flops = train_flops(
                Path(cfg["model_dir"]), method, lengths, labels, lora_n if method == "lora" else 0
            )
            rows[name] = train_row(result, sum(lengths), flops, peak)
            print(f"  {time.perf_counter() - started:.0f} s so far", flush=True)
        try:
            for r in serve_rows(dirs["0.5b"], root, device, sz):
                rows[r["name"]] = r
        except Exception:
            traceback.print_exc()
            print("serving: FAILED", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    print_table(rows)
    mfu = rows["train lora 1.5b ours"].get("mfu", float("nan"))
    speedup = ratio(rows["train lora 1.5b ours"].get("tok_s"), rows["train lora 1.5b trl"].get("tok_s"))
    serve = ratio(
        rows.get("serve engine base c=8", {}).get("tok_s"), rows.get("serve generate c=8", {}).get("tok_s")
    )
    print(
        f"gpu_lora_mfu={mfu:.4g} gpu_train_speedup_vs_trl={speedup:.2f} gpu_serve_speedup_vs_generate={serve:.2f}"
    )


def _cpu_peak() -> float:
    """The CPU smoke run's denominator: this machine's best measured matmul rate (bf16 or fp32)."""
    import torch

    from tuneforge.hardware import matmul_peak_gflops

    rates = matmul_peak_gflops(torch.get_num_threads(), n=512, seconds=0.2)
    return max(rates.values()) * 1e9


if __name__ == "__main__":
    sys.exit(main())
