"""Data parallelism inside one run: N processes (ranks), one copy of the model each, one global batch.

`SftRun` (and DPO, its subclass) take a `Parallel`; the default is one process and touches no
torch.distributed. With N ranks (a process group already set up by whoever started them: Ray
Train's TorchTrainer in jobs/ray_executor.py, gloo on CPU, nccl on GPU):

- each optimizer step's batch (the global batch: `batch_size` examples, as in one process) is dealt
  to the ranks (`share`); each rank sums its loss over its share and divides by the label tokens
  of the *whole* step (all-reduced first), so the gradients summed across ranks (`sync_grads`,
  all-reduce SUM) are the gradient one process computes on the whole batch, up to the order of
  float additions. Every rank then clips and steps the same gradient from the same weights, so the
  copies stay identical without DDP's wrapper (which averages, and would wrap what
  `save_pretrained` sees);
- the step's metrics are the all-reduced sums, so they equal one process's too;
- only rank 0 reports and writes (checkpoints, state/, step_metrics.csv, final/); the other ranks'
  reporter says nothing but asks rank 0 whether to stop: rank 0 polls its reporter and broadcasts
  the answer, so a cancel or a pause stops every rank at the same step;
- evaluation is dealt out by turns (`turns`): every rank polls for a stop as often as the others.

A collective that fails because another rank is gone raises `PeerLost`, so whoever runs the ranks
can tell a dead peer from a training error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from tuneforge.training.spec import Reporter, ResolvedHyperparameters, StopRequest

T = TypeVar("T")
BUCKET_ELEMENTS = 32 * 1024 * 1024  # gradients all-reduced per call: bounded extra memory
_STOPS = (None, StopRequest.CANCEL, StopRequest.PAUSE)


class PeerLost(RuntimeError):
    """A collective failed: another rank of this run stopped (its process or machine died)."""


class Parallel:
    """This process's place in a run: rank `rank` of `world` (1 of 1 by default)."""

    def __init__(self, rank: int = 0, world: int = 1, *, threads: int | None = None):
        self.rank = rank
        self.world = world
        self.threads = threads  # CPU threads for torch; None: every CPU this process may use

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- dealing work ---------------------------------------------------------------------------

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's part of `items` (every world-th one)."""
        return list(items[self.rank :: self.world])

    def turns(self, items: Sequence[T]) -> Iterator[T | None]:
        """This rank's part of `items`, one per turn, None on turns where it has none left: every
        rank takes the same number of turns, so a collective inside the loop matches up."""
        for start in range(0, len(items), self.world):
            j = start + self.rank
            yield items[j] if j < len(items) else None

    # --- collectives (no-ops in one process) -----------------------------------------------------

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        self._all_reduce(t)
        return tuple(t.tolist())

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks, in place."""
        if self.world > 1:
            t = tensor.to(self._device())
            self._all_reduce(t)
            tensor.copy_(t)
        return tensor

    def from_main(self, value: float) -> float:
        """Rank 0's `value`, on every rank."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        self._collective(dist.broadcast, t, src=0)
        return float(t.item())

    def sync_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Every parameter's gradient summed over the ranks (a rank without examples in this
        step contributes zeros), in buckets of flattened gradients of one dtype."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        buckets: dict[torch.dtype, list[list[torch.Tensor]]] = {}
        for p in params:
            grads = buckets.setdefault(p.grad.dtype, [[]])
            if grads[-1] and sum(g.numel() for g in grads[-1]) + p.numel() > BUCKET_ELEMENTS:
                grads.append([])
            grads[-1].append(p.grad)
        for bucket in (b for per_dtype in buckets.values() for b in per_dtype):
            flat = torch.cat([g.reshape(-1) for g in bucket]).to(self._device())
            self._all_reduce(flat)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def reporter(self, inner: Reporter | None) -> Reporter:
        """What the trainer talks to on this rank: `inner` itself in one process."""
        if self.world == 1:
            assert inner is not None
            return inner
        return RankReporter(inner if self.is_main else None, self)

    # --- helpers --------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":  # nccl reduces CUDA tensors only; gloo CPU ones
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _all_reduce(self, t: torch.Tensor) -> None:
        self._collective(dist.all_reduce, t)

    def _collective(self, op: Any, t: torch.Tensor, **kw: Any) -> None:
        try:
            op(t, **kw)
        except RuntimeError as exc:  # gloo: "Connection closed by peer"; nccl: a communicator error
            raise PeerLost(f"rank {self.rank}: {exc}") from exc


class RankReporter:
    """The Reporter of one rank of N: rank 0 forwards to the real reporter, the others say nothing;
    every rank asks for a stop at the same points and gets rank 0's answer."""

    def __init__(self, inner: Reporter | None, parallel: Parallel):
        self._inner = inner
        self._parallel = parallel

    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        if self._inner is not None:
            self._inner.event(message, level=level, data=data)

    def hyperparameters(self, resolved: ResolvedHyperparameters) -> None:
        if self._inner is not None:
            self._inner.hyperparameters(resolved)

    def metrics(self, data: dict[str, Any]) -> None:
        if self._inner is not None:
            self._inner.metrics(data)

    def checkpoint(self, step: int, epoch: int, path: Path, metrics: dict[str, Any]) -> None:
        if self._inner is not None:
            self._inner.checkpoint(step, epoch, path, metrics)

    def checkpoint_removed(self, step: int, path: Path) -> None:
        if self._inner is not None:
            self._inner.checkpoint_removed(step, path)

    def throughput(self, tokens: int, seconds: float) -> None:
        hook = getattr(self._inner, "throughput", None)
        if hook is not None:
            hook(tokens, seconds)

    def state_saved(self, output_dir: Path, step: int) -> None:
        hook = getattr(self._inner, "state_saved", None)
        if hook is not None:
            hook(output_dir, step)

    def stop_requested(self) -> StopRequest | None:
        code = _STOPS.index(self._inner.stop_requested()) if self._inner is not None else 0
        return _STOPS[int(self._parallel.from_main(code))]
