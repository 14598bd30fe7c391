from __future__ import annotations

import pytest

from tuneforge.errors import InvalidRequest
from tuneforge.training.hparams import BASE_LEARNING_RATE, learning_rate, resolve
from tuneforge.training.spec import Hyperparameters, ResolvedHyperparameters


@pytest.mark.parametrize(("n", "epochs", "batch"), [(10, 10, 1), (3, 25, 1), (50, 3, 1), (100, 3, 1),
                                                     (5_000, 3, 10), (10_000, 2, 20), (200_000, 1, 256)])
def test_auto_values(n: int, epochs: int, batch: int) -> None:
    assert resolve(Hyperparameters(), n) == ResolvedHyperparameters(epochs, batch, 1.0)


def test_explicit_values_win_and_scale_the_base_rate() -> None:
    hp = resolve(Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=0.5), 1000)
    assert hp == ResolvedHyperparameters(2, 4, 0.5)
    assert learning_rate("lora", hp) == BASE_LEARNING_RATE["lora"] * 0.5
    assert learning_rate("full", hp) == BASE_LEARNING_RATE["full"] * 0.5


def test_bad_values_are_collected_into_one_error() -> None:
    with pytest.raises(InvalidRequest) as exc:
        resolve(Hyperparameters(n_epochs=0, batch_size=0, learning_rate_multiplier=-1), 10)
    assert exc.value.code == "invalid_hyperparameters"
    assert "n_epochs" in exc.value.message and "batch_size" in exc.value.message
    assert "learning_rate_multiplier" in exc.value.message
