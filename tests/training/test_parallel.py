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

import json
import socket
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


def test_two_ranks_train_what_one_process_does(tiny_model_dir, tmp_path, monkeypatch):
    # fp32: in bf16 a rank's smaller packed rows round differently (8-bit mantissa), as any change
    # of micro-batch shape does; the data-parallel sums are what is checked here.
    monkeypatch.setenv("TUNEFORGE_BF16", "0")
    sft_data = [chat(q, a) for q, a in QA] + [chat(f"Echo {i}", f"{i} {i}") for i in range(5)]
    files = {
        "sft": write_jsonl(tmp_path / "sft.jsonl", sft_data),
        "sft_valid": write_jsonl(tmp_path / "sft_valid.jsonl", [chat(q, a) for q, a in QA[:7]]),
        "dpo": write_jsonl(tmp_path / "dpo.jsonl", [pair(i) for i in range(15)]),
        "dpo_valid": write_jsonl(tmp_path / "dpo_valid.jsonl", [pair(i) for i in range(20, 25)]),
    }

    def spec(kind: str, out: Path) -> TrainSpec:
        return TrainSpec(
            base_model=str(tiny_model_dir),
            training_file=files[kind],
            validation_file=files[f"{kind}_valid"],
            output_dir=out,
            method_type="supervised" if kind == "sft" else "dpo",
            seed=5,
            # 15 examples in batches of 4 (the last step has 3: one rank gets 1)
            hyperparameters=Hyperparameters(n_epochs=2, batch_size=4),
        )

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
