"""The one cost rule: prices (Settings.prices, USD per 1M tokens) and what tokens cost.

A job is *quoted* a training price once (`quote`, stored as `jobs.training_price` when its files
are validated, before any training), and its cost is always its trained tokens at
that quote (`training_cost`): the job object, the usage report and the job-finished e-mail all
call it, so a later change to the price table never changes what a job cost.
"""

from __future__ import annotations

from tuneforge.config import ModelPrice, Settings


def price(settings: Settings, model: str) -> ModelPrice:
    """The model's price; an `ft:` model without its own entry costs what its base model costs."""
    prices = settings.prices
    if model in prices:
        return prices[model]
    if model.startswith("ft:"):
        base = model.split(":")[1]
        if base in prices:
            return prices[base]
    return prices.get("default") or ModelPrice()


def quote(settings: Settings, model: str) -> float:
    """The training price (USD per 1M tokens) a job on `model` is quoted now."""
    return price(settings, model).training


def cost(tokens: int | None, per_million: float | None) -> float | None:
    """`tokens` at `per_million` USD per 1M tokens; None when either is unknown."""
    if tokens is None or per_million is None:
        return None
    return round(tokens * per_million / 1e6, 6)


def training_cost(trained_tokens: int | None, quoted_price: float | None) -> float | None:
    """What a job cost: its trained tokens at the price it was quoted (None until both exist)."""
    return cost(trained_tokens, quoted_price)


def inference_cost(settings: Settings, model: str, prompt: int, completion: int) -> float:
    p = price(settings, model)
    return round((prompt * p.input + completion * p.output) / 1e6, 6)
