#!/usr/bin/env bash
# The GPU benchmark in one command, from a fresh checkout on the GPU machine (make bench-gpu):
# installs the wheels the machine lacks from .whl/ (prepared here by benchmarks/gpu_wheels.sh;
# the machine reaches no registry), then runs benchmarks/bench_gpu.py. Under 8 minutes on an H200.
#   bash benchmarks/gpu.sh               # the GPU run
#   bash benchmarks/gpu.sh --cpu-smoke   # the same, tiny, on CPU (no wheels needed)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
SITE=${GPU_SITE:-/tmp/tuneforge-site}
if [[ " $* " != *" --cpu-smoke "* ]] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "gpu.sh: installing .whl/ failed"; exit 1; }
  export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu.sh: no .whl/ (run benchmarks/gpu_wheels.sh where a registry is reachable); using what is installed"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader
"$PY" -m pip list 2>/dev/null | grep -iE '^(torch|triton|transformers|peft|trl|liger.kernel|datasets|pyarrow|fsspec|accelerate) ' | tr -s ' ' | paste -sd';'
exec "$PY" benchmarks/bench_gpu.py "$@"
