"""`tuneforge data validate`: exit status, the --json shape, and the readable table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tuneforge.cli import app

BAD_FILES = Path(__file__).parent / "bad_files"


def _good_file(tmp_path: Path, n: int = 12) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"What is {i}+{i}?"},
                        {"role": "assistant", "content": str(2 * i)},
                    ]
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


def test_json_output_is_one_object_and_exit_status_follows_errors(tmp_path: Path) -> None:
    # A real process: stdout must hold exactly one JSON object (no progress bars or logs on it).
    env = {**os.environ, "TUNEFORGE_DATA_DIR": str(tmp_path / "data")}
    cmd = [str(Path(sys.executable).parent / "tuneforge"), "data"]
    bad = subprocess.run(
        [*cmd, "validate", str(BAD_FILES / "unknown_role.jsonl"), "--json", "--model", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 1, bad.stderr
    out = json.loads(bad.stdout)
    for key in ("n_examples", "errors", "warnings", "n_epochs", "billing_tokens", "estimated_trained_tokens"):
        assert key in out
    assert out["n_examples"] == 10 and out["n_invalid_examples"] == 3  # 13 lines
    assert [(e["line"], e["code"]) for e in out["errors"]] == [
        (2, "invalid_training_file"),
        (9, "invalid_training_file"),
        (10, "invalid_training_file"),
    ]
    assert all(e["message"] for e in out["errors"])

    good = subprocess.run(
        [*cmd, "validate", str(_good_file(tmp_path)), "--json", "--model", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    out = json.loads(good.stdout)
    assert out["errors"] == [] and out["n_examples"] == 12 and out["n_epochs"] == 8


def test_readable_table_lists_errors_with_lines() -> None:
    result = CliRunner().invoke(
        app,
        ["data", "validate", str(BAD_FILES / "bad_weight.jsonl"), "--model", "none"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    # rich wraps at the console width, and a long checkout path can push the summary past it
    assert "5 error(s)" in " ".join(result.output.split())
    assert "messages[1].weight" in result.output and "must be 0 or 1" in result.output
    assert "epochs (auto)" in result.output


def test_too_few_examples_fails_with_invalid_n_examples() -> None:
    result = CliRunner().invoke(
        app, ["data", "validate", str(BAD_FILES / "too_few_examples.jsonl"), "--json", "--model", "none"]
    )
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert [e["code"] for e in out["errors"]] == ["invalid_n_examples"]
    assert out["job_error"]["message"] == "Training file has 7 example(s), but must have at least 10 examples"


def test_token_statistics_with_a_local_model_directory(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "data",
            "validate",
            str(_good_file(tmp_path)),
            "--json",
            "--model",
            str(tiny_model_dir),
            "--price-per-million",
            "25",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["billing_tokens"] > 12 * 5
    assert out["estimated_trained_tokens"] == out["billing_tokens"] * out["n_epochs"]
    assert out["estimated_cost"] == round(out["estimated_trained_tokens"] * 25 / 1e6, 6)
    assert out["trained_tokens_per_example"]["min"] >= 2  # the answer and its terminator
    assert not any("skipped" in w for w in out["warnings"])


def test_an_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "validate", str(_good_file(tmp_path)), "--model", str(tmp_path / "no-such-model")]
    )
    assert result.exit_code == 2
    assert "cannot load a tokenizer" in result.output


def test_a_preference_file_is_validated_as_dpo_data(tmp_path: Path) -> None:
    env = {"TUNEFORGE_DATA_DIR": str(tmp_path / "data")}
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "input": {"messages": [{"role": "user", "content": f"What is {i}+{i}?"}]},
                    "preferred_output": [{"role": "assistant", "content": str(2 * i)}],
                    "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
                }
            )
            + "\n"
            for i in range(12)
        )
    )
    runner = CliRunner()
    detected = runner.invoke(app, ["data", "validate", str(path), "--json", "--model", "none"], env=env)
    assert detected.exit_code == 0, detected.output
    assert json.loads(detected.output)["format"] == "preference"
    as_sft = runner.invoke(
        app, ["data", "validate", str(path), "--json", "--model", "none", "--method", "supervised"], env=env
    )
    assert as_sft.exit_code == 1 and "method dpo" in json.loads(as_sft.output)["errors"][0]["message"]
    sft_as_dpo = runner.invoke(
        app,
        ["data", "validate", str(_good_file(tmp_path)), "--json", "--model", "none", "--method", "dpo"],
        env=env,
    )
    assert sft_as_dpo.exit_code == 1
    assert "a DPO job needs preference pairs" in json.loads(sft_as_dpo.output)["errors"][0]["message"]
