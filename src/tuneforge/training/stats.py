"""Numbers about a training file: distributions, the `auto` epoch rule, token counts.

Token counts come from the same rendering the trainer uses (`render.render_example`), so
"trained tokens" here are exactly the label tokens the trainer will compute loss on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
        return cls(int(arr.min()), int(arr.max()), float(arr.mean()), float(median),
                   float(p10), float(p90))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_tokens(tokenizer: Any, examples: Sequence[dict]) -> list[tuple[int, int]]:
    """(total tokens, trained tokens) per example, untruncated, as the trainer renders them."""
    from tuneforge.training.render import render_example

    out = []
    for example in examples:
        rendered = render_example(tokenizer, example, max_seq_len=None)
        trained = sum(1 for label in rendered.labels if label != -100)
        out.append((len(rendered.input_ids), trained))
    return out
