"""benchmarks/bench_gpu.py --cpu-smoke: the GPU benchmark's whole path (models of the Qwen2.5
family, our trainer and TRL each in its own process, the serving engine and plain generate) runs
end to end on CPU and prints its table and its last line, so the device run is not the first."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gpu import ROWS  # noqa: E402

LAST = re.compile(r"^gpu_lora_mfu=(\S+) gpu_train_speedup_vs_trl=(\S+) gpu_serve_speedup_vs_generate=(\S+)$")


@pytest.mark.slow
def test_cpu_smoke_prints_every_row_and_a_parsable_last_line(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TUNEFORGE_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=850,  # ~2 min on an idle 2-core machine; the suite allows 900 s a test
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert "FAILED" not in proc.stdout, proc.stdout + proc.stderr[-3000:]
    m = LAST.match(lines[-1])
    assert m, lines[-1]
    mfu, train_speedup, serve_speedup = (float(x) for x in m.groups())
    # Every figure was measured (a failed stage prints nan), and is a plausible number.
    assert 0 < mfu < 1, mfu
    assert math.isfinite(train_speedup) and train_speedup > 0
    assert math.isfinite(serve_speedup) and serve_speedup > 0
    table = {line.split("  ")[0].strip(): line for line in lines if line.startswith(("train ", "serve "))}
    assert set(ROWS) <= set(table), sorted(set(ROWS) - set(table))
    for name in ROWS:
        cells = table[name][len(name) :].split()
        assert cells[0] != "nan", table[name]  # tokens/s for every row
    # training rows carry MFU, peak memory and eval loss; serving rows TTFTs
    for name in ROWS:
        cells = table[name][len(name) :].split()
        if name.startswith("train"):
            assert "nan" not in cells[:4], table[name]
        else:
            assert "nan" not in (cells[0], cells[4], cells[5]), table[name]
