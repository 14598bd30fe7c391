"""DPO benchmark: our DPO trainer against TRL `DPOTrainer`, each in its own process.

    .venv/bin/python benchmarks/bench_dpo.py            # (make bench-dpo) the CPU case
    .venv/bin/python benchmarks/bench_dpo.py --quick    # a smoke run of the harness

Both train a LoRA adapter on the same locally built model (bench_train.py's: a Qwen2 with the tiny
model's tokenizer, fixed-seed random init), the same preference pairs, seed, beta, batch size,
learning rate, epochs and max length. The pairs: bench_train's tasks (repeat / reverse / sort /
first words) with the right answer preferred over a corrupted one (a word dropped or swapped).

- ours: `tuneforge.training.dpo.train` (reference log-probs once up front; a pair is one forward
  over its shared prompt once plus both outputs, a 4-D mask keeping the sides apart; logits only
  at labelled positions; bf16 autocast where native)
- trl_default: `DPOTrainer` with its defaults apart from the shared settings (PEFT: the reference
  is the adapter-disabled model, computed in every step; padded batches; bf16 where supported)

Timed: from handing the data to the trainer until training is done (TRL: construction, which
tokenizes, + train()). pairs/s = pairs x epochs / seconds. Peak RSS: the process's high-water mark.
Held-out preference accuracy is measured by this script the same way for both, after training:
the share of held-out pairs whose implicit reward margin is positive, i.e. the trained model
raises log p(preferred) - log p(non-preferred) above the starting model's. The LAST line printed
is `dpo_speedup_vs_trl=<x> accuracy_ours=<a> accuracy_trl=<b> rss_ratio=<r>`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _harness import (  # noqa: E402  (the benchmarks folder is not a package)
    TRL_QUIET,
    Listener,
    collect,
    last_loss,
    read_jsonl,
    spawn,
    trl_lora,
    worker_config,
    write_result,
)
from bench_train import SEED, SYSTEMS, _task, build_model, environment  # noqa: E402


def make_pair(rng: random.Random) -> dict:
    n = max(2, min(60, int(rng.lognormvariate(2.3, 0.6))))
    question, answer = _task(rng, n)
    words = answer.split()
    bad = list(words)
    if len(bad) > 1 and rng.random() < 0.5:
        i = rng.randrange(len(bad) - 1)
        bad[i], bad[i + 1] = bad[i + 1], bad[i]
    if bad == words:
        bad.pop(rng.randrange(len(bad))) if len(bad) > 1 else bad.append(bad[0])
    messages = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.7 else []
    messages.append({"role": "user", "content": question})
    return {
        "input": {"messages": messages},
        "preferred_output": [{"role": "assistant", "content": " ".join(words)}],
        "non_preferred_output": [{"role": "assistant", "content": " ".join(bad)}],
    }


def write_pairs(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    path.write_text("".join(json.dumps(make_pair(rng)) + "\n" for _ in range(n)))


# --- the shared measure -------------------------------------------------------------------------


def held_out_accuracy(policy, reference, tokenizer, path: Path, max_len: int) -> tuple[float, float]:
    """(share of held-out pairs with a positive implicit reward margin, mean margin / beta)."""
    import torch

    from tuneforge.training.dpo import load_pairs, pack_pairs, pair_logps

    pairs = load_pairs(tokenizer, path, max_len)
    margins = torch.zeros(len(pairs))
    with torch.no_grad():
        for row in pack_pairs(pairs, 8192):
            p = pair_logps(policy, row, torch.device("cpu"))
            r = pair_logps(reference, row, torch.device("cpu"))
            margins[[x.index for x in row.pairs]] = (p[:, 0] - p[:, 1] - r[:, 0] + r[:, 1]).float()
    return (margins > 0).float().mean().item(), margins.mean().item()


# --- contestants --------------------------------------------------------------------------------


def run_ours(cfg: dict) -> dict:
    from tuneforge.training.dpo import train
    from tuneforge.training.hparams import BASE_LEARNING_RATE
    from tuneforge.training.spec import Hyperparameters, TrainSpec

    spec = TrainSpec(
        base_model=cfg["model_dir"],
        training_file=Path(cfg["train"]),
        output_dir=Path(cfg["workdir"]) / "ours",
        method="lora",
        method_type="dpo",
        hyperparameters=Hyperparameters(
            n_epochs=cfg["epochs"],
            batch_size=cfg["batch_size"],
            learning_rate_multiplier=cfg["lr"] / BASE_LEARNING_RATE["lora"],
            beta=cfg["beta"],
        ),
        seed=SEED,
        lora_rank=cfg["lora_rank"],
        lora_alpha=cfg["lora_rank"] * 2,
        max_seq_len=cfg["max_len"],
        device="cpu",
    )
    reporter = Listener()
    t0 = time.perf_counter()
    result = train(spec, reporter)
    seconds = time.perf_counter() - t0
    assert result.status == "succeeded", result
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    policy = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(cfg["model_dir"]), result.final_dir
    ).eval()
    return {
        "seconds": seconds,
        "train_loss": reporter.last.get("train_loss"),
        **_accuracy(cfg, policy, tokenizer),
    }


def run_trl(cfg: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [
        {
            "prompt": e["input"]["messages"],
            "chosen": e["preferred_output"],
            "rejected": e["non_preferred_output"],
        }
        for e in read_jsonl(Path(cfg["train"]))
    ]
    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    args = DPOConfig(
        output_dir=str(Path(cfg["workdir"]) / "trl"),
        num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg["batch_size"],
        learning_rate=cfg["lr"],
        beta=cfg["beta"],
        seed=SEED,
        max_length=cfg["max_len"],
        use_cpu=True,
        **TRL_QUIET,
    )
    t0 = time.perf_counter()
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(cfg["model_dir"]),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=trl_lora(cfg["lora_rank"]),
    )
    trainer.train()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "train_loss": last_loss(trainer),
        **_accuracy(cfg, trainer.model.float().eval(), tokenizer),
    }


def _accuracy(cfg: dict, policy, tokenizer) -> dict:
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(cfg["model_dir"]).eval()
    acc, margin = held_out_accuracy(policy, reference, tokenizer, Path(cfg["eval"]), cfg["max_len"])
    return {"held_out_accuracy": acc, "held_out_margin": margin}


def worker(name: str, cfg_path: Path) -> None:
    cfg = worker_config(cfg_path, SEED)
    result = run_ours(cfg) if name == "ours" else run_trl(cfg)
    # peak RSS: the whole process (the shared evaluation included, for both)
    write_result(Path(cfg["workdir"]) / f"{name}.json", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--eval-pairs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--only", default="ours,trl_default")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.config))
        return
    if args.quick:
        args.pairs, args.eval_pairs, args.hidden, args.layers, args.epochs = 16, 8, 128, 2, 1

    env = environment()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        workdir = Path(tmp)
        model_dir = workdir / "model"
        n_params = build_model(model_dir, args.hidden, args.layers)
        write_pairs(workdir / "train.jsonl", args.pairs, SEED)
        write_pairs(workdir / "eval.jsonl", args.eval_pairs, SEED + 1)
        cfg = {
            "workdir": str(workdir),
            "model_dir": str(model_dir),
            "train": str(workdir / "train.jsonl"),
            "eval": str(workdir / "eval.jsonl"),
            "epochs": args.epochs,
            "beta": args.beta,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "max_len": args.max_len,
            "lora_rank": args.lora_rank,
            "threads": os.cpu_count() or 1,
        }
        (workdir / "cfg.json").write_text(json.dumps(cfg))
        print(
            f"model: Qwen2 hidden={args.hidden} layers={args.layers} params={n_params / 1e6:.1f}M; "
            f"LoRA r={args.lora_rank} lr={args.lr:g} beta={args.beta} batch={args.batch_size} "
            f"epochs={args.epochs}; {args.pairs} train pairs, {args.eval_pairs} held-out",
            flush=True,
        )
        results: dict[str, dict] = {}
        for name in args.only.split(","):
            t0 = time.perf_counter()
            proc = spawn(__file__, "--worker", name, "--config", str(workdir / "cfg.json"))
            result = collect(name, proc, workdir / f"{name}.json")
            if result is None:
                continue
            results[name] = result
            results[name]["pairs_s"] = args.pairs * args.epochs / results[name]["seconds"]
            print(f"{name}: done in {time.perf_counter() - t0:.0f}s", flush=True)

    print()
    print(
        f"{'run':<12} {'pairs/s':>8} {'seconds':>8} {'peak RSS MB':>12} {'train loss':>11} "
        f"{'held-out acc':>13} {'margin':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<12} {r['pairs_s']:>8.2f} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} "
            f"{r['train_loss'] if r['train_loss'] is not None else float('nan'):>11.4f} "
            f"{r['held_out_accuracy']:>13.3f} {r['held_out_margin']:>8.3f}"
        )
    print("env: " + " ".join(f"{k}={v}" for k, v in env.items()))
    ours, trl = results.get("ours"), results.get("trl_default")
    nan = float("nan")
    print(
        f"dpo_speedup_vs_trl={ours['pairs_s'] / trl['pairs_s'] if ours and trl else nan:.3f} "
        f"accuracy_ours={ours['held_out_accuracy'] if ours else nan:.3f} "
        f"accuracy_trl={trl['held_out_accuracy'] if trl else nan:.3f} "
        f"rss_ratio={ours['peak_rss_mb'] / trl['peak_rss_mb'] if ours and trl else nan:.3f}"
    )


if __name__ == "__main__":
    main()
