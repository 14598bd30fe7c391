from __future__ import annotations

import pytest

from tuneforge.errors import InvalidRequest
from tuneforge.training.hparams import BASE_LEARNING_RATE, learning_rate, resolve
from tuneforge.training.spec import Hyperparameters, ResolvedHyperparameters


@pytest.mark.parametrize(
    ("n", "epochs", "batch"),
    [(10, 10, 1), (3, 25, 1), (50, 3, 1), (100, 3, 1), (5_000, 3, 10), (10_000, 2, 20), (200_000, 1, 256)],
)
def test_auto_values(n: int, epochs: int, batch: int) -> None:
    assert resolve(Hyperparameters(), n) == ResolvedHyperparameters(
        n_epochs=epochs, batch_size=batch, learning_rate_multiplier=1.0
    )


def test_explicit_values_win_and_scale_the_base_rate() -> None:
    hp = resolve(Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=0.5), 1000)
    assert hp == ResolvedHyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=0.5)
    assert learning_rate("lora", hp) == BASE_LEARNING_RATE["lora"] * 0.5
    assert learning_rate("full", hp) == BASE_LEARNING_RATE["full"] * 0.5


def test_bad_values_are_collected_into_one_error() -> None:
    with pytest.raises(InvalidRequest) as exc:
        resolve(Hyperparameters(n_epochs=0, batch_size=0, learning_rate_multiplier=-1), 10)
    assert exc.value.code == "invalid_hyperparameters"
    assert "n_epochs" in exc.value.message and "batch_size" in exc.value.message
    assert "learning_rate_multiplier" in exc.value.message


def test_a_new_hyperparameter_is_one_definition() -> None:
    # DPO's beta: one Hyperparameter and its name in METHODS; validation (exact param paths),
    # resolution and the stored method object follow without another edit.
    from tuneforge.training import hparams

    beta = hparams.BETA
    assert beta in hparams.METHODS["dpo"] and beta not in hparams.METHODS["supervised"]
    param = "method.dpo.hyperparameters"
    assert hparams.check("dpo", {"beta": 0.5}, param)["beta"] == 0.5
    assert hparams.check("dpo", None, param)["beta"] == "auto"
    for bad in (3, 0, -1, "x", True):  # OpenAI's range: 0 < beta <= 2
        with pytest.raises(InvalidRequest) as exc:
            hparams.check("dpo", {"beta": bad}, param)
        assert exc.value.param == "method.dpo.hyperparameters.beta"
    assert hparams.check("dpo", {"beta": 2}, param)["beta"] == 2.0
    with pytest.raises(InvalidRequest) as exc:
        hparams.check("supervised", {"beta": 0.5}, "method.supervised.hyperparameters")
    assert exc.value.param == "method.supervised.hyperparameters.beta"
    method = hparams.method_object("dpo", hparams.check("dpo", {}, param))
    resolved = hparams.resolve(hparams.requested(method), 100, "dpo")
    assert (resolved.beta, resolved.n_epochs) == (0.1, 3)
    assert beta in hparams.all_definitions()
