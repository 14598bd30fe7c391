from __future__ import annotations

import pytest

from tuneforge.inference.synthetic import make_random_adapter


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from tuneforge.training.tiny import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def adapters(tiny_dir, tmp_path_factory):
    """Three distinct LoRA fine-tunes of tuneforge-tiny."""
    root = tmp_path_factory.mktemp("adapters")
    return [make_random_adapter(tiny_dir, root / f"ad{i}", seed=100 + i) for i in range(3)]
