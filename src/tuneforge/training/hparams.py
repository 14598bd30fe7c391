"""`auto` hyperparameters and the base learning rates that `learning_rate_multiplier` scales.

- n_epochs: OpenAI's cookbook rule (3, raised or lowered so that examples x epochs lands in
  100..25 000, clamped to 1..25), shared with the data validator (`stats.auto_n_epochs`).
- batch_size: OpenAI's legacy rule, about 0.2% of the examples, clamped to 1..256 (so 1 below 1 000
  examples, as real jobs on ~100 examples show).
- learning_rate_multiplier: 1.0.

Base learning rates (AdamW, peak after warmup, linear decay to 0): LoRA 1e-3, full fine-tuning
2e-5. LoRA adapters start at zero and learn through a low-rank product, so they need a rate well
above full fine-tuning's; 1e-3 is the high end of what LoRA recipes use with small batches, chosen
so that tuneforge-tiny memorises ten Q/A pairs within the default budget (see the memorisation
test). Use the multiplier to go lower (e.g. 0.2 -> 2e-4 for large models and large batches).
"""

from __future__ import annotations

from tuneforge.errors import InvalidRequest
from tuneforge.training.spec import Hyperparameters, ResolvedHyperparameters
from tuneforge.training.stats import auto_n_epochs

BASE_LEARNING_RATE = {"lora": 1e-3, "full": 2e-5}

# The hyperparameters each fine-tuning method (OpenAI's `method.type`) accepts. DPO adds `beta`:
# OpenAI's range is 0 < beta <= 2; `auto` is 0.1, TRL's DPOConfig default (OpenAI does not say).
METHOD_HYPERPARAMETERS = {
    "supervised": ("batch_size", "learning_rate_multiplier", "n_epochs"),
    "dpo": ("batch_size", "beta", "learning_rate_multiplier", "n_epochs"),
}
BETA_AUTO = 0.1
BETA_MAX = 2.0


def beta_problem(value: object) -> str | None:
    """Why `value` is not a valid DPO beta ("auto" or a number in (0, 2]), or None."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= BETA_MAX:
        return f"Expected 'auto' or a number greater than 0 and at most {BETA_MAX:g}."
    return None


def resolve_beta(value: float | str | None) -> float:
    """The beta a DPO run uses: `auto` (or unset) is BETA_AUTO."""
    if value is None or value == "auto":
        return BETA_AUTO
    problem = beta_problem(value)
    if problem:
        raise InvalidRequest(f"Invalid method.dpo.hyperparameters.beta: {value!r}. {problem}",
                             param="method.dpo.hyperparameters.beta",
                             code="invalid_hyperparameters")
    return float(value)


def auto_batch_size(n_examples: int) -> int:
    return max(1, min(256, n_examples // 500))


def resolve(hp: Hyperparameters, n_examples: int, method_type: str = "supervised") -> ResolvedHyperparameters:
    n_epochs = auto_n_epochs(n_examples) if hp.n_epochs == "auto" else int(hp.n_epochs)
    batch_size = auto_batch_size(n_examples) if hp.batch_size == "auto" else int(hp.batch_size)
    lrm = 1.0 if hp.learning_rate_multiplier == "auto" else float(hp.learning_rate_multiplier)
    problems = []
    if n_epochs < 1:
        problems.append(f"n_epochs must be at least 1, got {n_epochs}")
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if not lrm > 0:
        problems.append(f"learning_rate_multiplier must be positive, got {lrm}")
    if problems:
        raise InvalidRequest("; ".join(problems), param="hyperparameters", code="invalid_hyperparameters")
    beta = resolve_beta(hp.beta) if method_type == "dpo" else None
    return ResolvedHyperparameters(n_epochs=n_epochs, batch_size=batch_size, learning_rate_multiplier=lrm,
                                   beta=beta)


def learning_rate(method: str, resolved: ResolvedHyperparameters) -> float:
    return BASE_LEARNING_RATE[method] * resolved.learning_rate_multiplier
