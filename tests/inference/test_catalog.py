"""The catalog: configured base models, aliases, and OpenAI's model_not_found for the rest."""

from __future__ import annotations

import pytest

from tuneforge.catalog import TINY_NAME, Catalog
from tuneforge.config import Settings
from tuneforge.errors import NotFound


def _settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, **kw).resolved()


def test_names_always_include_tiny_then_configured_then_aliases(tmp_path):
    local = tmp_path / "llama"
    local.mkdir()
    cat = Catalog(
        _settings(
            tmp_path,
            base_models={"my-llama": str(local)},
            model_aliases={"gpt-4o-mini-2024-07-18": "my-llama"},
        )
    )
    assert cat.names() == [TINY_NAME, "my-llama", "gpt-4o-mini-2024-07-18"]


def test_alias_resolves_to_its_base_source_and_keeps_the_callers_name(tmp_path):
    local = tmp_path / "llama"
    local.mkdir()
    cat = Catalog(
        _settings(
            tmp_path,
            base_models={"my-llama": str(local), "q": "Qwen/Qwen2.5-0.5B"},
            model_aliases={"gpt-4o-mini-2024-07-18": "my-llama"},
        )
    )
    ref = cat.resolve_base("gpt-4o-mini-2024-07-18")
    assert (ref.name, ref.source, ref.base_name) == (
        "gpt-4o-mini-2024-07-18",
        str(local.resolve()),
        "my-llama",
    )
    assert cat.resolve_base("q").source == "Qwen/Qwen2.5-0.5B"  # HF ids pass through untouched


def test_unknown_name_is_openais_model_not_found(tmp_path):
    cat = Catalog(_settings(tmp_path, model_aliases={"dangling": "nowhere"}))
    for name in ("gpt-5", "dangling"):
        with pytest.raises(NotFound) as info:
            cat.resolve_base(name)
        assert info.value.code == "model_not_found"
        # OpenAI's message, then the names that would work
        assert info.value.message == (
            f"The model `{name}` does not exist or you do not have "
            f"access to it. Available base models: {TINY_NAME}."
        )


def test_env_json_configures_the_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_BASE_MODELS", '{"b": "org/b"}')
    monkeypatch.setenv("TUNEFORGE_MODEL_ALIASES", '{"a": "b"}')
    cat = Catalog(Settings(data_dir=tmp_path).resolved())
    assert cat.resolve_base("a").source == "org/b"
