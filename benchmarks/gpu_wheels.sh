#!/usr/bin/env bash
# Prepares .whl/: the wheels benchmarks/gpu.sh installs on the GPU machine, which reaches no
# package registry. Its image has torch, triton, transformers, accelerate, tokenizers, datasets'
# pyarrow/pandas, numpy, jinja2 (see the device notes); this brings the rest, at this project's
# pinned versions, for its Python 3.12 on x86-64, without dependencies (each one is named here).
# Run here, in the repository root, with network access: bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
rm -rf .whl && mkdir -p .whl
WHEELS=(
  transformers==5.23.0 peft==0.21.2 trl==1.16.0 liger-kernel==0.8.5       # trainers and kernels
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19                        # TRL's data layer
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3         # tuneforge.config
  annotated-types==0.8.0 typing-inspection==0.4.5 python-dotenv==1.2.4
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
du -sh .whl && ls .whl
