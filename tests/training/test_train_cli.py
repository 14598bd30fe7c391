"""`tuneforge train` as a user runs it: a subprocess, flags plus a --config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.training.helpers import QA, chat, write_jsonl
from tuneforge.training.tiny import tiny_dir_name

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))


def _run(args: list[str], data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run([TUNEFORGE, "train", *args], capture_output=True, text=True, env=env, timeout=600)


def test_train_command_with_config_file_and_flags(tmp_path: Path) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in QA])
    valid_file = write_jsonl(tmp_path / "valid.jsonl", [chat(q, a) for q, a in QA[:3]])
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "model": "tuneforge-tiny",
                "training_file": str(train_file),
                "n_epochs": 5,
                "batch_size": 5,
                "seed": 1,
            }
        )
    )
    out = tmp_path / "out"
    proc = _run(
        [
            "--config",
            str(config),
            "--validation-file",
            str(valid_file),
            "--n-epochs",
            "2",
            "--output",
            str(out),
        ],
        tmp_path / "data",
    )
    assert proc.returncode == 0, proc.stderr
    assert "succeeded: 4/4 steps" in proc.stderr  # the flag (2 epochs) beat the config (5)
    assert "n_epochs=2 batch_size=5" in proc.stderr and "tok/s" in proc.stderr
    tiny = tmp_path / "data" / "models" / tiny_dir_name()  # built on first use, versioned
    assert (tiny / "config.json").is_file()
    meta = json.loads((out / "final" / "tuneforge.json").read_text())
    assert meta["base_model"] == str(tiny)
    assert "full_valid_loss" in meta["metrics"]
    assert len((out / "step_metrics.csv").read_text().splitlines()) == 5


def test_train_command_refuses_bad_input_without_a_traceback(tmp_path: Path) -> None:
    proc = _run(["--model", "tuneforge-tiny", "--training-file", str(tmp_path / "missing.jsonl")], tmp_path)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "image_url"}]},
                ]
            }
        )
        + "\n"
    )
    proc = _run(
        ["--model", "tuneforge-tiny", "--training-file", str(bad), "--output", str(tmp_path / "o")], tmp_path
    )
    assert proc.returncode == 1 and "invalid_training_file" in proc.stderr and "Line 1" in proc.stderr
    assert "Traceback" not in proc.stderr
