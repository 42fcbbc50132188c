# The two commands a new user needs (see README.md):
#   make demo   set everything up, bring the local Slurm sandbox up, run the end-to-end story
#   make test   set everything up, run ruff, mypy --strict and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of PyTorch; override e.g. TORCH='torch==2.13.0' or a CUDA build on a GPU site.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit setup system venv bench clean

demo: setup
	$(BIN)/hpcplat demo

test: setup lint typecheck
	$(BIN)/pytest -q -ra --durations=15

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check hpcplat node_agent tests bench

typecheck:
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q -m "not sandbox and not postgres and not sshd"

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

setup: system venv

system:
	bash scripts/install-system-packages.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
