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
- evaluation is dealt out by turns (`turns`): every rank polls for a stop as often as the others;
- a run ends together: every rank returns once rank 0 has written what it writes last (state/ of
  a pause, final/), so whatever comes next on any rank (a resume in the same output directory)
  finds it whole.

A collective that fails because another rank is gone raises `PeerLost`, so whoever runs the ranks
can tell a dead peer from a training error.

Sharded (FSDP), for a full fine-tune whose weights + gradients + Adam state do not fit one device
(`uses_fsdp`, the one rule; training/fsdp.py does the sharding): the same global batch, loss
normalisation and metrics, but each rank holds 1/N of the weights, gradients and optimizer state,
and backward reduce-scatters (SUM) instead of `sync_grads`. Every forward and backward gathers each
layer's weights from all ranks, so every rank runs as many of them as the others: a rank with
fewer micro-batches in a step (or none in an evaluation turn) runs a filler whose loss counts 0
(`rounds`). Checkpoints and state are gathered whole onto rank 0 (`full_weights`, `full_state`) in
the layout one process writes, and read back shard by shard (`place_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist

from tuneforge.training.spec import Reporter, ResolvedHyperparameters, StopRequest

T = TypeVar("T")
BUCKET_ELEMENTS = 32 * 1024 * 1024  # gradients all-reduced per call: bounded extra memory
_STOPS = (None, StopRequest.CANCEL, StopRequest.PAUSE)
Sharding = Literal["auto", "ddp", "fsdp"]


def uses_fsdp(sharding: Sharding, method: str, world: int) -> bool:
    """Whether a run shards (FSDP) rather than holding a whole copy per rank (DDP-style): only a
    full fine-tune over more than one rank does, unless `ddp` is asked for. `auto` and `fsdp`
    agree today (`auto` is the default that may one day keep a model that fits one device
    unsharded). A LoRA run is never sharded: its trainable weights and their Adam state are small."""
    return method == "full" and world > 1 and sharding != "ddp"


class PeerLost(RuntimeError):
    """A collective failed: another rank of this run stopped (its process or machine died)."""


class Parallel:
    """This process's place in a run: rank `rank` of `world` (1 of 1 by default)."""

    def __init__(
        self, rank: int = 0, world: int = 1, *, threads: int | None = None, sharding: Sharding = "auto"
    ):
        self.rank = rank
        self.world = world
        self.threads = threads  # CPU threads for torch; None: every CPU this process may use
        self.sharding = sharding
        self.sharded = False  # set by `shard`

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

    def rounds(self, rows: Sequence[T], filler: Callable[[], T]) -> list[tuple[T, bool]]:
        """This rank's micro-batches of one step as (row, real). Sharded, every rank runs as many
        forwards and backwards as the busiest one (each gathers every layer from all ranks): the
        missing ones on `filler()`, whose loss the caller multiplies by 0."""
        out = [(row, True) for row in rows]
        if self.sharded:
            most = int(self.max(len(out)))
            out += [(filler(), False) for _ in range(most - len(out))]
        return out

    # --- sharding (FSDP, training/fsdp.py) ---------------------------------------------------------

    def shards(self, method: str) -> bool:
        """Whether a run of `method` (lora | full) is sharded here."""
        return uses_fsdp(self.sharding, method, self.world)

    def shard(self, model: torch.nn.Module, device: torch.device, method: str) -> torch.nn.Module:
        """`model`, sharded over the ranks where `uses_fsdp` says so (else as it is); its shards
        are moved to `device`, never the whole model."""
        if not self.shards(method):
            return model
        from tuneforge.training import fsdp

        self.sharded = True
        return fsdp.shard(model, device, self.world)

    def clip_grads(self, params: list[torch.nn.Parameter], max_norm: float) -> None:
        if self.sharded:
            from tuneforge.training import fsdp

            fsdp.clip_grad_norm_(params, max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(params, max_norm)

    def full_weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """Sharded: the whole state_dict, gathered (every rank calls this), on rank 0; else None
        (the model holds it whole)."""
        if not self.sharded:
            return None
        from tuneforge.training import fsdp

        return fsdp.full_weights(model, keep=self.is_main)

    def full_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Sharded: (trainable weights, optimizer state_dict), gathered whole (every rank calls
        this), on rank 0; else None."""
        if not self.sharded:
            return None
        from tuneforge.training import fsdp

        return fsdp.full_state(model, optimizer, keep=self.is_main)

    def place_state(self) -> Callable[..., None] | None:
        """Sharded: how saved whole state goes into this rank's shards; else None (copied in)."""
        if not self.sharded:
            return None
        from tuneforge.training import fsdp

        return fsdp.place_state

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

    def max(self, value: float) -> float:
        """The largest `value` of the ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        self._collective(lambda x: dist.all_reduce(x, op=dist.ReduceOp.MAX), t)
        return float(t.item())

    def from_main(self, value: float) -> float:
        """Rank 0's `value`, on every rank."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        self._collective(dist.broadcast, t, src=0)
        return float(t.item())

    def barrier(self) -> None:
        """Returns on each rank once every rank has reached it (an all-reduce of nothing much)."""
        if self.world > 1:
            self.sum(0.0)

    def sync_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Every parameter's gradient summed over the ranks (a rank without examples in this
        step contributes zeros), in buckets of flattened gradients of one dtype. Sharded: nothing
        to do (backward reduce-scattered them, summed)."""
        if self.world == 1 or self.sharded:
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
