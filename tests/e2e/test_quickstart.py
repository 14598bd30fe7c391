"""The README's quickstart must stay true: examples/quickstart.py, run as a user would run it
(plain openai SDK, configured by environment only), fine-tunes tuneforge-tiny and gets the trained
answer back from the fine-tuned model."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_quickstart_example_runs_end_to_end(server) -> None:
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": server.create_key()}
    run = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("created ftjob-")
    assert any(line.startswith("checkpoint ") and ":ckpt-step-" in line for line in lines)
    assert any(line.startswith("model ft:tuneforge-tiny:default:quickstart:") for line in lines)
    assert lines[-1] == "answer: Paris."

    # the server's log (server, worker and training child) stays readable: no library
    # deprecation warnings and no tqdm progress bars ("Loading weights", "Writing model shards")
    log = server.log()
    assert "level=INFO" in log and "/v1/chat/completions" in log
    for noise in ("FutureWarning", "warnings.warn(", "Loading weights", "it/s]", "\r"):
        assert noise not in log, noise
