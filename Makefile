# Two commands for a fresh machine: `make run` (main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

# Extract (cached) features, train the default matcher, evaluate, print the numbers.
run: install
	$(BIN)/python -m gmatch train --out runs/default --overwrite

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf cache runs
