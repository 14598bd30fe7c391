"""Data-parallel training on Ray (not a test): `make bench-ray`.

The same LoRA training (tuneforge's trainer, same data, seed, global batch, steps) three ways, one
after the other, on a `ray start --head` cluster this script starts on 127.0.0.1 (and stops):

- local: one process, no Ray (what TUNEFORGE_EXECUTOR=local runs), torch on every CPU;
- ray x1: one Ray Train worker (`TorchTrainer`, 1 CPU, 1 torch thread);
- ray x2: two Ray Train workers (1 CPU and 1 thread each, gloo), each step's batch dealt between
  them and the gradients all-reduced (training/parallel.py).

Tokens/s is the steady state measured inside the trainer: the step's tokens (the whole global
batch) over rank 0's wall time of the step (which includes waiting for the all-reduce), summed over
every step but the first. `wall` is the whole run as a job would see it (Ray start-up of the
workers, model load, training). Scaling efficiency = tokens/s(ray x2) / (2 x tokens/s(ray x1)).
On a 2-core machine that also runs other work do not expect a speed-up: two single-threaded ranks
compete for the same cores as one two-threaded process, plus the all-reduce.

The LAST line printed is `ray_scaling_efficiency=<e> ray2_vs_local=<r>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from bench_train import environment, prepare_model, write_jsonl  # noqa: E402

from tests.ray_cluster import RayHead  # noqa: E402


class TimingReporter:
    """A Reporter that keeps each step's throughput (tokens, seconds) and loss."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []
        self.losses: list[float] = []

    def event(self, message, *, level="info", data=None) -> None:
        pass

    def hyperparameters(self, resolved) -> None:
        pass

    def metrics(self, data) -> None:
        self.losses.append(float(data["train_loss"]))

    def checkpoint(self, step, epoch, path, metrics) -> None:
        pass

    def checkpoint_removed(self, step, path) -> None:
        pass

    def stop_requested(self):
        return None

    def throughput(self, tokens: int, seconds: float) -> None:
        self.steps.append((tokens, seconds))


def run_training(config: dict, parallel=None) -> dict:
    """One rank's training (or the whole of a local run) -> rank 0's timings."""
    from tuneforge.training import train
    from tuneforge.training.spec import Hyperparameters, TrainSpec

    reporter = TimingReporter() if parallel is None or parallel.is_main else None
    spec = TrainSpec(
        base_model=config["model"],
        training_file=Path(config["train"]),
        output_dir=Path(config["out"]),
        hyperparameters=Hyperparameters(n_epochs=1, batch_size=config["batch"]),
        seed=1234,
        keep_checkpoints=1,
    )
    result = train(spec, reporter, parallel)
    if reporter is None:
        return {}
    timed = reporter.steps[1:]  # the first step warms up (allocations, caches)
    return {
        "tokens_per_s": sum(t for t, _ in timed) / sum(s for _, s in timed),
        "steps": result.steps,
        "trained_tokens": result.trained_tokens,
        "first_loss": reporter.losses[0],
        "last_loss": reporter.losses[-1],
    }


def ray_rank(config: dict) -> dict:
    """A Ray Train worker: rank r of the run."""
    import ray.train

    from tuneforge.training.parallel import Parallel

    ctx = ray.train.get_context()
    return run_training(config, Parallel(ctx.get_world_rank(), ctx.get_world_size(), threads=1))


def run_ray(config: dict, workers: int) -> dict:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        ray_rank,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(
            name=f"bench-{workers}-{int(time.time())}",
            storage_path=config["storage"],
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    return trainer.fit().return_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="synthetic", help="synthetic (default), smollm2, a HF dir or .gguf"
    )
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--examples", type=int, default=192)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        model, described = prepare_model(args.model, work, args.hidden, args.layers)
        write_jsonl(work / "train.jsonl", args.examples, seed=1)
        base = {"model": str(model), "train": str(work / "train.jsonl"), "batch": args.batch}
        base["storage"] = str(work / "ray")
        env = environment()
        load = [os.getloadavg()[0]]
        rows = {}
        t0 = time.perf_counter()
        rows["local"] = run_training({**base, "out": str(work / "local")})
        rows["local"]["wall"] = time.perf_counter() - t0
        load.append(os.getloadavg()[0])
        with RayHead(num_cpus=2) as head:
            ray.init(address=head.address, logging_level="WARNING", log_to_driver=False)
            try:
                for workers in (1, 2):
                    t0 = time.perf_counter()
                    rows[f"ray x{workers}"] = run_ray({**base, "out": str(work / f"ray{workers}")}, workers)
                    rows[f"ray x{workers}"]["wall"] = time.perf_counter() - t0
                    load.append(os.getloadavg()[0])
            finally:
                ray.shutdown()

    print(
        f"\n- {time.strftime('%Y-%m-%d')}, commit `{env['commit']}`; {env['cpu']}, {env['cores']} cores; "
        f"torch {env['torch']}. Load average (1 min) before/between/after the runs: "
        f"{', '.join(f'{x:.1f}' for x in load)}."
    )
    print(f"- {described}, LoRA, {args.examples} examples, global batch {args.batch}, 1 epoch.\n")
    print("| run | steps | trained tokens | tokens/s (steady) | wall s | first loss | last loss |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['steps']} | {r['trained_tokens']} | {r['tokens_per_s']:.0f} | {r['wall']:.1f} "
            f"| {r['first_loss']:.4f} | {r['last_loss']:.4f} |"
        )
    efficiency = rows["ray x2"]["tokens_per_s"] / (2 * rows["ray x1"]["tokens_per_s"])
    vs_local = rows["ray x2"]["tokens_per_s"] / rows["local"]["tokens_per_s"]
    print(f"\nray_scaling_efficiency={efficiency:.2f} ray2_vs_local={vs_local:.2f}")


if __name__ == "__main__":
    main()
