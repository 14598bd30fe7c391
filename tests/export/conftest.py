from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from tuneforge.training.tiny import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models"))
