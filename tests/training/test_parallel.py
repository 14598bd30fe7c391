"""Data-parallel training (training/parallel.py) without Ray: two real ranks (processes joined by a
gloo process group on 127.0.0.1) train what one process trains on the same global batch, for SFT
and DPO, in fp32:
- the same gradient at the first step (summed over the ranks, before clipping: a wrong loss
  normalisation shows here even where Adam, invariant to the gradient's scale, would hide it in
  the weights): rtol 1e-4, atol 1e-6 (measured: within 4e-8);
- the same per-step metrics, validation dealt between the ranks included (rtol 1e-4);
- the same final weights up to float noise that Adam amplifies on near-zero gradients (atol
  1e-4; measured: at most 2.4e-5 on weights of magnitude 0.05-0.09);
- the same billed tokens; only rank 0 writes.

(tests/e2e/test_ray.py runs the same trainer on a real Ray cluster through the job system.)
"""

from __future__ import annotations

import faulthandler
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import QA, Recorder, chat, write_jsonl
from tuneforge.training import Hyperparameters, TrainSpec, train
from tuneforge.training.parallel import Parallel

pytestmark = pytest.mark.slow


def pair(i: int) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": f"Say hello to {i}."}]},
        "preferred_output": [{"role": "assistant", "content": f"Hello {i}! Cheers."}],
        "non_preferred_output": [{"role": "assistant", "content": f"Hello {i}."}],
    }


class FirstGrads(Parallel):
    """Parallel as it is, keeping the gradients of the first step as they go to clipping."""

    grads: list[torch.Tensor] | None = None

    def sync_grads(self, params: list[torch.nn.Parameter]) -> None:
        super().sync_grads(params)
        if self.grads is None:
            self.grads = [p.grad.detach().clone() for p in params]


def _ranks(rank: int, world: int, port: int, specs: dict[str, TrainSpec], out: str) -> None:
    """One rank: every spec in turn; rank 0 writes what its reporter heard."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for name, spec in specs.items():
            rec = Recorder() if rank == 0 else None
            parallel = FirstGrads(rank, world, threads=1)
            result = train(spec, rec, parallel)
            if rec is not None:
                torch.save(parallel.grads, Path(out) / f"{name}-grads.pt")
                heard = {"steps": rec.steps, "trained_tokens": result.trained_tokens, "status": result.status}
                (Path(out) / f"{name}.json").write_text(json.dumps(heard))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec_factory(
    model_dir: Path, tmp_path: Path, n: int, hp: Hyperparameters, method: str = "lora"
) -> Callable[[str, Path], TrainSpec]:
    """spec(kind, output_dir) for kind "sft" or "dpo": `n` training examples of each (the QA
    pairs and echoes; preference pairs), their own validation files, seed 5."""
    sft_data = [chat(q, a) for q, a in QA] + [chat(f"Echo {i}", f"{i} {i}") for i in range(n - len(QA))]
    files = {
        "sft": write_jsonl(tmp_path / "sft.jsonl", sft_data),
        "sft_valid": write_jsonl(tmp_path / "sft_valid.jsonl", [chat(q, a) for q, a in QA[:7]]),
        "dpo": write_jsonl(tmp_path / "dpo.jsonl", [pair(i) for i in range(n)]),
        "dpo_valid": write_jsonl(tmp_path / "dpo_valid.jsonl", [pair(i) for i in range(20, 25)]),
    }

    def spec(kind: str, out: Path) -> TrainSpec:
        return TrainSpec(
            base_model=str(model_dir),
            training_file=files[kind],
            validation_file=files[f"{kind}_valid"],
            output_dir=out,
            method=method,
            method_type="supervised" if kind == "sft" else "dpo",
            seed=5,
            hyperparameters=hp,
        )

    return spec


def test_two_ranks_train_what_one_process_does(tiny_model_dir, tmp_path, monkeypatch):
    # fp32: in bf16 a rank's smaller packed rows round differently (8-bit mantissa), as any change
    # of micro-batch shape does; the data-parallel sums are what is checked here.
    monkeypatch.setenv("TUNEFORGE_BF16", "0")
    # 15 examples in batches of 4 (the last step has 3: one rank gets 1)
    spec = _spec_factory(tiny_model_dir, tmp_path, 15, Hyperparameters(n_epochs=2, batch_size=4))

    one = {}
    for kind in ("sft", "dpo"):
        rec, parallel = Recorder(), FirstGrads(threads=1)
        result = train(spec(kind, tmp_path / f"one-{kind}"), rec, parallel)
        one[kind] = (rec.steps, result, parallel.grads)

    heard = tmp_path / "heard"
    heard.mkdir()
    specs = {kind: spec(kind, tmp_path / f"two-{kind}") for kind in ("sft", "dpo")}
    torch.multiprocessing.spawn(_ranks, args=(2, _free_port(), specs, str(heard)), nprocs=2, join=True)

    for kind in ("sft", "dpo"):
        steps_one, result_one, grads_one = one[kind]
        two = json.loads((heard / f"{kind}.json").read_text())
        grads_two = torch.load(heard / f"{kind}-grads.pt")
        assert len(grads_one) == len(grads_two) > 0
        for g1, g2 in zip(grads_one, grads_two):
            torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6)
        assert two["status"] == "succeeded"
        assert two["trained_tokens"] == result_one.trained_tokens
        assert [m["step"] for m in two["steps"]] == [m["step"] for m in steps_one] == list(range(1, 9))
        for a, b in zip(steps_one, two["steps"]):
            assert a.keys() == b.keys(), a["step"]  # validation at the same steps
            for key, value in a.items():
                if key.endswith("rewards_accuracy") and a["step"] == 1:
                    # policy == reference: every reward is 0 up to rounding, so the accuracy only
                    # counts which side rounded up (the rewards themselves are compared below)
                    continue
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (kind, a["step"], key)
        wa = load_file(str(result_one.final_dir / "adapter_model.safetensors"))
        wb = load_file(str(tmp_path / f"two-{kind}" / "final" / "adapter_model.safetensors"))
        assert wa.keys() == wb.keys() and wa
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-4, msg=f"{kind} {name}")
        # one writer: one metrics file, checkpoints of the 2 epochs, no state left behind
        rows = (tmp_path / f"two-{kind}" / "step_metrics.csv").read_text().splitlines()
        assert len(rows) == 9
        assert sorted(p.name for p in (tmp_path / f"two-{kind}" / "checkpoints").iterdir()) == [
            "step-000004",
            "step-000008",
        ]
        assert not (tmp_path / f"two-{kind}" / "state").exists()


# --- sharded (FSDP) full fine-tunes ------------------------------------------------------------


class Sharded(Parallel):
    """Parallel as it is, keeping the first step's gradients (gathered whole: a collective, which
    every rank reaches) and what this rank stores of the weights and of the Adam state when the
    run first saves its state. `slow_write`: rank 0 takes that many seconds more to write state/
    (as under load), so another rank that went on to the next run before it was written shows."""

    grads: list[torch.Tensor] | None = None
    stored: dict[str, int] | None = None
    slow_write = 0.0

    def sync_grads(self, params: list[torch.nn.Parameter]) -> None:
        from torch.distributed.tensor import DTensor

        super().sync_grads(params)
        if self.grads is None:
            self.grads = [
                (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).detach().clone()
                for p in params
            ]

    def full_state(self, model, optimizer):
        from tuneforge.training.fsdp import local_numel

        if self.stored is None:
            params = [p for g in optimizer.param_groups for p in g["params"]]  # (always the shards)
            moments = [
                t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()
            ]
            self.stored = {
                "params": local_numel(params),
                "params_total": sum(p.numel() for p in params),
                "optimizer": local_numel(moments),
                "bytes": sum(
                    (t.to_local() if hasattr(t, "to_local") else t).untyped_storage().nbytes()
                    for t in [*params, *moments]
                ),
            }
        full = super().full_state(model, optimizer)
        if self.is_main:
            time.sleep(self.slow_write)
        return full


def _sharded_ranks(rank: int, world: int, port: int, runs: list[tuple[str, TrainSpec, int | None]], out: str):
    """One rank: every run in turn (a run with a pause step is paused there by rank 0's reporter);
    each rank writes what it stored, rank 0 what its reporter heard."""
    import torch.distributed as dist

    from tests.training.helpers import stop_at
    from tuneforge.training.spec import StopRequest

    faulthandler.enable()  # a rank that crashes (once seen: a segfault in gloo's thread): its stack
    faulthandler.dump_traceback_later(240, exit=True)  # a rank stuck in a collective: its stack, then out
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for name, spec, pause_at in runs:
            rec = Recorder(stop_at(pause_at, StopRequest.PAUSE) if pause_at else None) if rank == 0 else None
            parallel = Sharded(rank, world, threads=1)
            if pause_at:  # the resumed run must still start from the saved step on both ranks
                parallel.slow_write = 2.0
            result = train(spec, rec, parallel)
            (Path(out) / f"{name}-stored-{rank}.json").write_text(json.dumps(parallel.stored))
            if rec is not None:
                torch.save(parallel.grads, Path(out) / f"{name}-grads.pt")
                heard = {
                    "steps": rec.steps,
                    "trained_tokens": result.trained_tokens,
                    "status": result.status,
                    "events": rec.event_data,
                }
                (Path(out) / f"{name}.json").write_text(json.dumps(heard))
    finally:
        dist.destroy_process_group()


def test_two_sharded_ranks_train_what_one_process_does_and_resume_exactly(
    tiny_model_dir, tmp_path, monkeypatch
):
    """A full fine-tune over 2 ranks is sharded (FSDP2, auto): each rank stores half the weights
    and Adam moments, and the run computes what one process computes on the same global batch
    (SFT and DPO, fp32): first-step gradients rtol 1e-4 / atol 1e-6, metrics rel 1e-4, final
    weights atol 1e-4 (measured: at most 6.6e-7 SFT, 1.6e-5 DPO; they move by more than 5e-4); its checkpoints and final model are whole, ordinary
    model dirs. Paused mid-epoch and resumed, it ends bit for bit where the run without a pause ends."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("TUNEFORGE_BF16", "0")
    # 13 examples in batches of 4: the last step of an epoch has 1, so rank 1 runs a filler
    spec = _spec_factory(
        tiny_model_dir,
        tmp_path,
        13,
        # lr 10x full's default (2e-4): the weights move enough for the comparison to mean something
        Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=10),
        method="full",
    )

    one = {}
    for kind in ("sft", "dpo"):
        rec, parallel = Recorder(), Sharded(threads=1)
        result = train(spec(kind, tmp_path / f"one-{kind}"), rec, parallel)
        one[kind] = (rec.steps, result, parallel.grads, parallel.stored)

    heard = tmp_path / "heard"
    heard.mkdir()
    runs = [(kind, spec(kind, tmp_path / f"two-{kind}"), None) for kind in ("sft", "dpo")]
    runs += [
        ("paused", spec("sft", tmp_path / "two-paused"), 3),  # mid-epoch 1 (4 steps an epoch)
        ("resumed", spec("sft", tmp_path / "two-paused"), None),
    ]
    torch.multiprocessing.spawn(_sharded_ranks, args=(2, _free_port(), runs, str(heard)), nprocs=2, join=True)

    def final_weights(out: Path) -> dict[str, torch.Tensor]:
        return load_file(str(out / "final" / "model.safetensors"))

    start = load_file(str(tiny_model_dir / "model.safetensors"))
    for kind in ("sft", "dpo"):
        steps_one, result_one, grads_one, stored_one = one[kind]
        two = json.loads((heard / f"{kind}.json").read_text())
        assert two["status"] == "succeeded"
        assert any(m.startswith("Sharded (FSDP) over 2 ranks") for m, _ in two["events"])
        # each rank stores half the weights and half the Adam moments (exp_avg, exp_avg_sq)
        stored = [json.loads((heard / f"{kind}-stored-{r}.json").read_text()) for r in (0, 1)]
        total = stored_one["params"]
        assert stored_one["params_total"] == total and stored_one["optimizer"] == 2 * total
        assert sum(s["params"] for s in stored) == total
        for s in stored:
            assert 0.45 * total <= s["params"] <= 0.55 * total, (kind, s, total)
            assert s["optimizer"] == 2 * s["params"]
            assert s["bytes"] <= 0.55 * stored_one["bytes"], (kind, s, stored_one)
        grads_two = torch.load(heard / f"{kind}-grads.pt")
        assert len(grads_one) == len(grads_two) > 0
        for g1, g2 in zip(grads_one, grads_two):
            torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6)
        assert two["trained_tokens"] == result_one.trained_tokens
        assert [m["step"] for m in two["steps"]] == [m["step"] for m in steps_one] == list(range(1, 9))
        for a, b in zip(steps_one, two["steps"]):
            assert a.keys() == b.keys(), a["step"]
            for key, value in a.items():
                if key.endswith("rewards_accuracy") and a["step"] == 1:
                    continue  # (policy == reference: see above)
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (kind, a["step"], key)
        wa, wb = final_weights(result_one.final_dir.parent), final_weights(tmp_path / f"two-{kind}")
        assert wa.keys() == wb.keys() and wa
        moved = max((wa[n] - start[n]).abs().max().item() for n in wa if n in start)
        assert moved > 5e-4, (kind, moved)
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-4, msg=f"{kind} {name}")
        # whole, ordinary model dirs: the epoch checkpoints and final/ load as any model does
        two_dir = tmp_path / f"two-{kind}"
        assert sorted(p.name for p in (two_dir / "checkpoints").iterdir()) == ["step-000004", "step-000008"]
        assert not (two_dir / "state").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "two-sft" / "final")
    assert sum(p.numel() for p in model.parameters()) == one["sft"][3]["params"]

    # paused at step 3 (state/ saved whole, as one process saves it), then resumed: the same end
    paused = json.loads((heard / "paused.json").read_text())
    resumed = json.loads((heard / "resumed.json").read_text())
    uninterrupted = json.loads((heard / "sft.json").read_text())["steps"]
    assert paused["status"] == "paused" and [m["step"] for m in paused["steps"]] == [1, 2, 3]
    assert resumed["status"] == "succeeded" and [m["step"] for m in resumed["steps"]] == list(range(4, 9))
    assert paused["steps"] + resumed["steps"] == uninterrupted
    w_resumed, w_straight = final_weights(tmp_path / "two-paused"), final_weights(tmp_path / "two-sft")
    for name in w_straight:
        assert torch.equal(w_resumed[name], w_straight[name]), name


def test_tuneforge_train_under_torchrun_shards_a_full_fine_tune(tiny_model_dir, tmp_path):
    """`torchrun --nproc-per-node 2 tuneforge train --method full`: two ranks (gloo), sharded;
    rank 0 alone reports and writes an ordinary model dir."""
    import os
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in QA])
    tuneforge = Path(sys.executable).parent / "tuneforge"
    env = {
        **os.environ,
        "TUNEFORGE_DATA_DIR": str(tmp_path / "data"),
        "TUNEFORGE_BF16": "0",
        "COLUMNS": "200",
    }
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
        + ["--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(tuneforge), "train"]
        + ["--model", str(tiny_model_dir), "--training-file", str(data), "--method", "full"]
        + ["--n-epochs", "1", "--batch-size", "4", "--output", str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Sharded (FSDP) over 2 ranks" in out.stderr and out.stderr.count("succeeded: 3/3 steps") == 1
    final = tmp_path / "run" / "final"
    assert json.loads((final / "tuneforge.json").read_text())["kind"] == "full"
    assert AutoModelForCausalLM.from_pretrained(final).config.architectures == ["Qwen2ForCausalLM"]
