"""Every hyperparameter, defined once: name, `auto` rule, bounds and help, per fine-tuning method.

Read by the API's validation (`check`, exact `param` paths), the dashboard's create form and the
CLI (`definitions`: labels and help), the trainer (`resolve`), the job runner (`requested`), the
reporter and W&B (`ResolvedHyperparameters` is a mapping of these names).

- n_epochs: OpenAI's cookbook rule (3, raised or lowered so that examples x epochs lands in
  100..25 000, clamped to 1..25), shared with the data validator (`stats.auto_n_epochs`).
- batch_size: OpenAI's legacy rule, about 0.2% of the examples, clamped to 1..256 (so 1 below 1 000
  examples, as real jobs on ~100 examples show).
- learning_rate_multiplier: 1.0.
- beta (DPO only): 0.1, TRL's default; OpenAI's range 0 < beta <= 2.

Base learning rates (AdamW, peak after warmup, linear decay to 0): LoRA 1e-3, full fine-tuning
2e-5. LoRA adapters start at zero and learn through a low-rank product, so they need a rate well
above full fine-tuning's; 1e-3 is the high end of what LoRA recipes use with small batches, chosen
so that tuneforge-tiny memorises ten Q/A pairs within the default budget (see the memorisation
test). Use the multiplier to go lower (e.g. 0.2 -> 2e-4 for large models and large batches).

Adding a hyperparameter (as DPO's `beta` was) is one definition below and its name in `METHODS`:
validation, the form, the CLI help, resolution, the stored job and W&B follow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tuneforge.errors import InvalidRequest
from tuneforge.training.spec import Hyperparameters, ResolvedHyperparameters

BASE_LEARNING_RATE = {"lora": 1e-3, "full": 2e-5}
AUTO = "auto"


def auto_n_epochs(n_examples: int) -> int:
    from tuneforge.training.stats import auto_n_epochs as rule  # numpy: loaded when used

    return rule(n_examples)


def auto_batch_size(n_examples: int) -> int:
    return max(1, min(256, n_examples // 500))


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: type[int] | type[float]
    auto: Callable[[int], int | float]  # the `auto` value for a file of n examples
    minimum: float  # inclusive for integers, exclusive for numbers
    maximum: float | None  # inclusive; None: unbounded
    label: str  # short, for the dashboard's form
    help: str  # one sentence, for the form and the CLI

    @property
    def expected(self) -> str:
        if self.type is int:
            return f"an integer between {self.minimum:g} and {self.maximum:g}"
        if self.maximum is None:
            return f"a number > {self.minimum:g}"
        return f"a number > {self.minimum:g} and at most {self.maximum:g}"

    def valid(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.type is int:
            return isinstance(value, int) and self.minimum <= value <= (self.maximum or math.inf)
        return (
            isinstance(value, int | float)
            and math.isfinite(value)
            and value > self.minimum
            and (self.maximum is None or value <= self.maximum)
        )

    def check(self, value: Any, param: str) -> int | float | str:
        """`value` as stored (`auto` kept, numbers typed), or a 400 naming `param`."""
        if value is None or value == AUTO:
            return AUTO
        if not self.valid(value):
            raise InvalidRequest(
                f"Invalid {param}: {value!r}. Expected 'auto' or {self.expected}.", param=param
            )
        return self.type(value)


N_EPOCHS = Hyperparameter(
    "n_epochs",
    int,
    auto_n_epochs,
    1,
    50,
    "Epochs",
    "Passes over the training file; auto: 3, adjusted so examples x epochs is 100..25 000.",
)
BATCH_SIZE = Hyperparameter(
    "batch_size",
    int,
    auto_batch_size,
    1,
    256,
    "Batch size",
    "Examples per optimizer step; auto: about 0.2% of the examples (1 below 1 000).",
)
LEARNING_RATE_MULTIPLIER = Hyperparameter(
    "learning_rate_multiplier",
    float,
    lambda n: 1.0,
    0,
    None,
    "LR multiplier",
    "Scales the base learning rate (LoRA 1e-3, full 2e-5); auto: 1.0.",
)

# DPO only. OpenAI's range is 0 < beta <= 2; `auto` is 0.1, TRL's DPOConfig default (OpenAI does
# not say).
BETA = Hyperparameter(
    "beta",
    float,
    lambda n: 0.1,
    0,
    2,
    "Beta",
    "DPO: how strongly the policy is held to the reference model (higher: closer); auto: 0.1.",
)

# Per method, in the order OpenAI lists them (the wire's and the error messages' order).
METHODS: dict[str, tuple[Hyperparameter, ...]] = {
    "supervised": (BATCH_SIZE, LEARNING_RATE_MULTIPLIER, N_EPOCHS),
    "dpo": (BATCH_SIZE, BETA, LEARNING_RATE_MULTIPLIER, N_EPOCHS),
}


def definitions(method: str = "supervised") -> tuple[Hyperparameter, ...]:
    return METHODS[method]


def all_definitions() -> tuple[Hyperparameter, ...]:
    """Every hyperparameter of any method, once each (the form shows those of the chosen method)."""
    seen: dict[str, Hyperparameter] = {}
    for defs in METHODS.values():
        for d in defs:
            seen.setdefault(d.name, d)
    return tuple(seen.values())


def check(method: str, value: Any, param: str) -> dict[str, Any]:
    """The requested hyperparameters of `method` (`auto` filled in for missing ones) from a
    request's object at `param` (e.g. `method.supervised.hyperparameters`); a 400 naming the exact
    field on any mistake."""
    defs = {d.name: d for d in definitions(method)}
    out: dict[str, Any] = dict.fromkeys(defs, AUTO)
    if value is None:
        return out
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{param} must be an object.", param=param)
    for key in value:
        if key not in defs:
            raise InvalidRequest(
                f"Unknown hyperparameter {key!r}; expected one of {', '.join(defs)}.", param=f"{param}.{key}"
            )
    for key, v in value.items():
        out[key] = defs[key].check(v, f"{param}.{key}")
    return out


def stored(method: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hyperparameters kept on a job's `method` object (requested with `auto`s until the
    trainer resolves them, then the values it uses)."""
    method = method or {}
    kind = method.get("type", "supervised")
    return dict((method.get(kind) or {}).get("hyperparameters") or {})


def method_object(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A job's `method` (as on the wire) holding `values` as its hyperparameters."""
    return {"type": kind, kind: {"hyperparameters": dict(values)}}


def requested(method: Mapping[str, Any] | None) -> Hyperparameters:
    """What the trainer is asked for, from a job's stored `method`."""
    kind = (method or {}).get("type", "supervised")
    values = stored(method)
    return Hyperparameters(**{d.name: values.get(d.name, AUTO) for d in definitions(kind)})


def resolve(hp: Hyperparameters, n_examples: int, method: str = "supervised") -> ResolvedHyperparameters:
    """Each `auto` replaced by its rule for `n_examples`; every value checked (one error for all)."""
    values: dict[str, int | float] = {}
    problems = []
    for d in definitions(method):
        v = hp.get(d.name, AUTO)
        v = d.auto(n_examples) if v == AUTO else v
        if not d.valid(v):
            problems.append(f"{d.name} must be {d.expected}, got {v!r}")
        else:
            values[d.name] = d.type(v)
    if problems:
        raise InvalidRequest("; ".join(problems), param="hyperparameters", code="invalid_hyperparameters")
    return ResolvedHyperparameters(**values)


def learning_rate(method: str, resolved: ResolvedHyperparameters) -> float:
    return BASE_LEARNING_RATE[method] * float(resolved.learning_rate_multiplier)
