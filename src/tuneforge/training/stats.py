"""Numbers about a training file: distributions, the `auto` epoch rule, token counts.

Token counts come from the same rendering the trainer uses (`batch_render.render_batch`), so
"trained tokens" per example here are exactly the label tokens the trainer will compute loss on.
(What a job bills, its `trained_tokens`, counts every token: `billing_tokens` x epochs, where an
example's billed tokens are its tokens as the trainer truncates them, `render.truncate`.)
"""

from __future__ import annotations

import multiprocessing
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# OpenAI cookbook (Chat_finetuning_data_prep): aim for 3 epochs, but keep examples x epochs
# within 100..25 000 and the epochs within 1..25.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_n_epochs(n_examples: int) -> int:
    """OpenAI's `auto` epochs for a file of `n_examples` examples."""
    if n_examples <= 0:
        return MAX_DEFAULT_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


@dataclass(frozen=True)
class Distribution:
    """min / max / mean / median / p10 / p90 (numpy's linear quantiles, as the cookbook)."""

    min: int
    max: int
    mean: float
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, values: Sequence[int]) -> Distribution | None:
        if len(values) == 0:
            return None
        arr = np.asarray(values, dtype=np.int64)
        p10, median, p90 = np.quantile(arr, [0.1, 0.5, 0.9])
        return cls(int(arr.min()), int(arr.max()), float(arr.mean()), float(median), float(p10), float(p90))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RenderFailure:
    line: int
    code: str
    message: str
    param: str | None


@dataclass
class TokenCounts:
    """Per-example (total, trained, billed) token counts of one batch, plus examples that cannot
    render. Billed: the tokens trained on once cut at max_seq_len (each sequence of an example
    rendered per turn is cut on its own). Arrays, not objects per example: a 512 MB file has
    millions of examples."""

    totals: array = field(default_factory=lambda: array("q"))
    trained: array = field(default_factory=lambda: array("q"))
    billed: array = field(default_factory=lambda: array("q"))
    failures: list[RenderFailure] = field(default_factory=list)

    def extend(self, other: TokenCounts) -> None:
        self.totals.extend(other.totals)
        self.trained.extend(other.trained)
        self.billed.extend(other.billed)
        self.failures.extend(other.failures)


def count_tokens(
    tokenizer: Any, batch: Sequence[tuple[int, dict]], max_seq_len: int | None = None
) -> TokenCounts:
    """Untruncated total and trained tokens of (line, example) pairs, exactly as the trainer
    renders them (chat template + label mask; `render_batch` is `render_example`, batched), and
    the tokens billed once cut at `max_seq_len`."""
    from tuneforge.training.batch_render import render_batch
    from tuneforge.training.render import IGNORE_INDEX, truncate

    out = TokenCounts()
    rendering = render_batch(tokenizer, [example for _, example in batch], max_seq_len=None)
    for n, (line, _example) in enumerate(batch):
        rendered = rendering.rendered[n]
        if rendered is None:
            exc = rendering.errors[n]
            out.failures.append(
                RenderFailure(line, exc.code or "invalid_training_file", exc.message, exc.param)
            )
            continue
        out.totals.append(len(rendered.input_ids))
        out.trained.append(len(rendered.labels) - rendered.labels.count(IGNORE_INDEX))
        out.billed.append(len(truncate(rendered, max_seq_len)))
    return out


class TokenCounter:
    """Counts tokens batch by batch, in this process or in a pool of worker processes.

    Rendering runs the chat template (Jinja, in Python) once per needed prefix, so one core is
    the bottleneck on big files; a pool of `processes` spreads batches over the cores. At most
    2 x processes batches are in flight, so memory stays bounded while the caller streams.
    """

    def __init__(self, tokenizer: Any, processes: int = 1, max_seq_len: int | None = None):
        self._tokenizer = tokenizer
        self._max_seq_len = max_seq_len
        self._processes = processes
        self._pool = None
        self._in_flight: deque = deque()
        self.counts = TokenCounts()
        if processes > 1:
            # spawn, not fork: the caller may hold torch threads or a database connection
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(processes, initializer=_init_worker, initargs=(tokenizer, max_seq_len))

    def add(self, batch: list[tuple[int, dict]]) -> None:
        if self._pool is None:
            self.counts.extend(count_tokens(self._tokenizer, batch, self._max_seq_len))
            return
        self._in_flight.append(self._pool.apply_async(_count_in_worker, (batch,)))
        while len(self._in_flight) > 2 * self._processes:
            self.counts.extend(self._in_flight.popleft().get())

    def finish(self) -> TokenCounts:
        while self._in_flight:
            self.counts.extend(self._in_flight.popleft().get())
        self.close()
        return self.counts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> TokenCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WORKER_TOKENIZER: Any = None
_WORKER_MAX_SEQ_LEN: int | None = None


def _init_worker(tokenizer: Any, max_seq_len: int | None) -> None:
    global _WORKER_TOKENIZER, _WORKER_MAX_SEQ_LEN
    _WORKER_TOKENIZER, _WORKER_MAX_SEQ_LEN = tokenizer, max_seq_len


def _count_in_worker(batch: list[tuple[int, dict]]) -> TokenCounts:
    return count_tokens(_WORKER_TOKENIZER, batch, _WORKER_MAX_SEQ_LEN)
