"""Base models managed in the store: `tuneforge models add|list|remove`, the checks at add time,
and the one resolver that makes a registered model usable by the API (list, chat, fine-tune).

No weights are loaded here: sources are small config-only directories (checked like real ones)
and, where a model must resolve, the locally built tuneforge-tiny directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.catalog import TINY_NAME
from tuneforge.cli import app
from tuneforge.errors import Conflict, InvalidRequest
from tuneforge.services import base_models
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.db import transaction


def _config_dir(path: Path, model_type: str = "llama", **extra) -> Path:
    """A directory that looks like a Hugging Face model to a config check (no weights)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type, **extra}))
    return path


@pytest.fixture
def cli(settings):
    """cli(*args) -> (exit code, stdout + stderr) of `tuneforge ...` on the test's data dir/db."""
    runner = CliRunner()
    env = {"TUNEFORGE_DATA_DIR": str(settings.data_dir), "TUNEFORGE_DATABASE_URL": settings.database_url}

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    return run


def test_add_list_remove_through_the_cli(cli, tmp_path):
    src = _config_dir(tmp_path / "llama-small")
    code, out = cli("models", "add", "my-llama", str(src), "--alias", "gpt-4o-mini-2024-07-18")
    assert code == 0, out
    assert "LlamaForCausalLM" in out
    code, out = cli("models", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert list(rows) == [TINY_NAME, "my-llama"]
    assert rows["my-llama"] == {
        "name": "my-llama",
        "source": str(src.resolve()),
        "origin": "store",
        "aliases": ["gpt-4o-mini-2024-07-18"],
        "note": None,
    }
    assert "untrained" in rows[TINY_NAME]["note"]  # the test model says what it is
    code, out = cli("models", "remove", "my-llama")
    assert code == 0 and "Removed base model my-llama" in out
    assert [r["name"] for r in json.loads(cli("models", "list", "--json")[1])] == [TINY_NAME]


@pytest.mark.parametrize(
    "case", ["missing", "no-config", "unknown-type", "not-causal-lm", "bad-gguf", "plain-file"]
)
def test_a_bad_source_is_refused_at_add_and_nothing_is_stored(cli, tmp_path, case):
    source = {
        "missing": lambda: tmp_path / "nowhere",
        "no-config": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
        "unknown-type": lambda: _config_dir(tmp_path / "x", model_type="no-such-architecture"),
        "not-causal-lm": lambda: _config_dir(tmp_path / "vit", model_type="vit"),
        "bad-gguf": lambda: (tmp_path / "m.gguf").write_bytes(b"GGUF not really") and tmp_path / "m.gguf",
        "plain-file": lambda: (tmp_path / "weights.bin").write_bytes(b"\0") and tmp_path / "weights.bin",
    }[case]()
    code, out = cli("models", "add", "bad", str(source))
    assert code != 0
    expected = {
        "missing": "no such file or directory",
        "no-config": "no config.json",
        "unknown-type": "unsupported architecture",
        "not-causal-lm": "unsupported architecture",
        "bad-gguf": "transformers cannot read this GGUF",
        "plain-file": "not a model",
    }[case]
    assert expected in out and str(source) in out, out
    assert [r["name"] for r in json.loads(cli("models", "list", "--json")[1])] == [TINY_NAME]


def test_a_hub_id_is_accepted_with_a_note(cli):
    code, out = cli("models", "add", "qwen", "Qwen/Qwen2.5-0.5B-Instruct")
    assert code == 0 and "cannot be checked offline" in out
    rows = json.loads(cli("models", "list", "--json")[1])
    assert rows[-1]["source"] == "Qwen/Qwen2.5-0.5B-Instruct"


def test_names_clash_with_tiny_settings_and_the_store(settings, db, tmp_path):
    settings = settings.model_copy(
        update={"base_models": {"from-env": "org/x"}, "model_aliases": {"env-alias": "from-env"}}
    )
    with transaction(db) as s:
        base_models.add(s, settings, "mine", str(tmp_path), "dir", ["mine-alias"])
    for name, aliases in [
        (TINY_NAME, []),
        ("from-env", []),
        ("env-alias", []),
        ("mine", []),
        ("new", ["mine-alias"]),
        ("new", ["env-alias"]),
        ("new", ["new"]),
    ]:
        with pytest.raises(Conflict), transaction(db) as s:
            base_models.add(s, settings, name, str(tmp_path), "dir", aliases)
    with pytest.raises(InvalidRequest), transaction(db) as s:
        base_models.add(s, settings, "ft:mine", str(tmp_path), "dir", [])
    with pytest.raises(InvalidRequest), transaction(db) as s:  # settings-defined: not ours
        base_models.remove(s, settings, "from-env")
    with transaction(db) as s:  # settings first, store after; aliases after bases
        assert ModelResolver(settings).catalog(s).names() == [
            TINY_NAME,
            "from-env",
            "mine",
            "env-alias",
            "mine-alias",
        ]
        assert base_models.remove(s, settings, "mine-alias") == "alias"


def test_a_stored_base_is_listed_chatted_with_and_fine_tuned_through_the_api(
    app_client, auth_headers, db, settings
):
    """Registered while the server runs: offered at once by /v1/models, chat and job creation;
    an unknown name's errors list the available base models."""
    from tuneforge.training.tiny import ensure_tiny_model

    tiny = ensure_tiny_model(settings.models_dir)
    with transaction(app_client.app.state.sessionmaker) as s:
        base_models.add(s, settings, "stored-tiny", str(tiny), "dir", ["stored-alias"])
    ids = [m["id"] for m in app_client.get("/v1/models", headers=auth_headers).json()["data"]]
    assert ids[:3] == [TINY_NAME, "stored-tiny", "stored-alias"]
    assert app_client.get("/v1/models/stored-alias", headers=auth_headers).json()["owned_by"] == "system"

    r = app_client.post(
        "/v1/chat/completions",
        headers=auth_headers,
        json={
            "model": "stored-alias",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "stored-alias"

    r = app_client.post(
        "/v1/chat/completions",
        headers=auth_headers,
        json={"model": "stored-tinny", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["message"] == (
        "The model `stored-tinny` does not exist or you do not have access to it. "
        "Available base models: tuneforge-tiny, stored-tiny."
    )

    line = (
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
        + "\n"
    )
    file_id = app_client.post(
        "/v1/files",
        headers=auth_headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", line * 10)},
    ).json()["id"]
    r = app_client.post(
        "/v1/fine_tuning/jobs", headers=auth_headers, json={"model": "stored-tiny", "training_file": file_id}
    )
    assert r.status_code == 200 and r.json()["model"] == "stored-tiny", r.text
    r = app_client.post(
        "/v1/fine_tuning/jobs", headers=auth_headers, json={"model": "nope", "training_file": file_id}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_available"
    assert r.json()["error"]["message"].endswith("Available base models: tuneforge-tiny, stored-tiny.")


def test_the_runner_starts_from_a_stored_base_and_fails_cleanly_once_it_is_removed(settings, db, tmp_path):
    from types import SimpleNamespace

    from tuneforge.errors import TuneforgeError

    src = _config_dir(tmp_path / "llama")
    resolver = ModelResolver(settings)
    with transaction(db) as s:
        base_models.add(s, settings, "mine", str(src), "dir", [])
    job = SimpleNamespace(base_model="mine", project_id="p")
    with transaction(db) as s:
        start = resolver.training_start(s, job)
    assert (start.base_model, start.init_adapter, start.attach_base) == (str(src), None, str(src))
    with transaction(db) as s:
        base_models.remove(s, settings, "mine")
    with pytest.raises(TuneforgeError) as info, transaction(db) as s:
        resolver.training_start(s, job)
    assert info.value.code == "model_not_available"


def test_the_dashboard_pickers_offer_stored_bases(app_client, settings, tmp_path):
    from tests.ui.test_ui_api import new_secret, sign_in

    with transaction(app_client.app.state.sessionmaker) as s:
        base_models.add(
            s, settings, "picker-model", str(_config_dir(tmp_path / "m")), "dir", ["picker-alias"]
        )
    sign_in(app_client, new_secret(app_client))
    for page in ("/ui/jobs/new", "/ui/playground"):
        html = app_client.get(page).text
        assert "picker-model" in html and "picker-alias" in html, page
