"""What each rank stores of a full fine-tune, 1 process vs 2 sharded (FSDP) ranks (not a test).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_fsdp_memory.py [--model smollm2|tiny|DIR|X.gguf]

The same full fine-tune (tuneforge's trainer, same data, seed and global batch) runs one step and
pauses, once in one process and once as 2 ranks (processes joined by gloo on 127.0.0.1, sharded
because the method is `full`: training/parallel.uses_fsdp). At the pause, when the Adam moments
exist, each rank counts the bytes of what it stores: its weights (its shards under FSDP) and its
optimizer state (exp_avg, exp_avg_sq); gradients are freed between steps (set to None) and are
the size of the weights while they exist. Peak RSS is the process's, which also holds the whole
model while loading it (before sharding) and the libraries.

The LAST line printed is `fsdp_param_optim_ratio=<rank bytes at 2 ranks / bytes at 1 process>`.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from bench_train import prepare_model, write_jsonl  # noqa: E402


def _measured_parallel(rank: int, world: int, out: Path):
    import torch

    from tuneforge.training.fsdp import local_numel
    from tuneforge.training.parallel import Parallel

    class Measured(Parallel):
        def full_state(self, model, optimizer):
            def nbytes(tensors) -> int:
                return sum(
                    (t.to_local() if hasattr(t, "to_local") else t).untyped_storage().nbytes()
                    for t in tensors
                )

            params = [p for g in optimizer.param_groups for p in g["params"]]  # (always the shards)
            moments = [
                t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()
            ]
            row = {
                "rank": rank,
                "world": world,
                "sharded": self.sharded,
                "params": local_numel(params),
                "param_bytes": nbytes(params),
                "optimizer_bytes": nbytes(moments),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
            (out / f"{world}-{rank}.json").write_text(json.dumps(row))
            return super().full_state(model, optimizer)

    return Measured(rank, world, threads=1)


def _rank(rank: int, world: int, port: int, spec, out: str) -> None:
    import torch.distributed as dist

    from tests.training.helpers import Recorder, stop_at
    from tuneforge.training import train
    from tuneforge.training.spec import StopRequest

    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rec = Recorder(stop_at(1, StopRequest.PAUSE)) if rank == 0 else None
        result = train(spec, rec, _measured_parallel(rank, world, Path(out)))
        assert result.status == "paused", result.status
    finally:
        if world > 1:
            dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    from tuneforge.training.spec import Hyperparameters, TrainSpec

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2", help="smollm2 | DIR | X.gguf | synthetic")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir, desc = prepare_model(args.model, work, 128, 4)
        data = work / "train.jsonl"
        write_jsonl(data, 16, 0)
        rows = []
        for world in (1, 2):
            spec = TrainSpec(
                base_model=str(model_dir),
                training_file=data,
                output_dir=work / f"out-{world}",
                method="full",
                seed=0,
                max_seq_len=256,
                hyperparameters=Hyperparameters(n_epochs=1, batch_size=4),
            )
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(_rank, args=(world, port, spec, str(work)), nprocs=world, join=True)
            rows += [json.loads((work / f"{world}-{r}.json").read_text()) for r in range(world)]
    mib = 2**20
    print(f"model: {desc}")
    print("ranks rank sharded  params(local)  weights MiB  Adam state MiB  weights+Adam MiB  peak RSS MiB")
    for r in rows:
        both = r["param_bytes"] + r["optimizer_bytes"]
        print(
            f"{r['world']:5d} {r['rank']:4d} {r['sharded']!s:7}  {r['params']:13,d}  {r['param_bytes'] / mib:11.1f}"
            f"  {r['optimizer_bytes'] / mib:14.1f}  {both / mib:16.1f}  {r['peak_rss_bytes'] / mib:12.0f}"
        )
    one = rows[0]["param_bytes"] + rows[0]["optimizer_bytes"]
    two = max(r["param_bytes"] + r["optimizer_bytes"] for r in rows[1:])
    print(f"fsdp_param_optim_ratio={two / one:.3f}")


if __name__ == "__main__":
    main()
