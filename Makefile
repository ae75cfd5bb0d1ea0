# `make demo` and `make test` are the whole setup on a fresh machine: each creates .venv,
# installs the project (with test extras for `make test`) and runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

# The frameworks' own config parsers (Megatron-LM, torchtitan, DeepSpeed, torchrun) check the
# launches `planner emit` writes (tests/frameworks). Built once into .venv-frameworks (~2 min,
# 2.5 GB); when it cannot be built, those tests are skipped and say why.
FW := .venv-frameworks

.PHONY: demo test lint clean frameworks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/planner estimate --model examples/llama3-70b.yaml --cluster dgx-h100 \
		--global-batch 512 --seq-len 8192 --tp 8 --pp 4 --dp 4 --vpp 5 --mbs 1 \
		--recompute selective --zero 1
	mkdir -p out
	$(BIN)/planner estimate --model llama3-70b --cluster dgx-h100 --global-batch 512 \
		--seq-len 8192 --tp 8 --pp 4 --dp 4 --vpp 5 --zero 1 --format json \
		-o out/llama3-70b-plan.yaml --force > out/llama3-70b-estimate.json
	$(BIN)/planner check out/llama3-70b-plan.yaml --cluster dgx-h100
	$(BIN)/planner emit out/llama3-70b-plan.yaml --to megatron -o out/llama3-70b-launch --force

frameworks: $(FW)/.ok

$(FW)/.ok: tests/frameworks/setup.sh
	@echo "building the frameworks' parsers into $(FW) (log: $(FW).log)"
	@PYTHON=$(PYTHON) tests/frameworks/setup.sh $(FW) > $(FW).log 2>&1 || \
		{ echo "could not build $(FW); tests/frameworks will be skipped:"; tail -n 3 $(FW).log; }

test: $(TEST_STAMP) frameworks
	$(BIN)/python -m pytest
	$(BIN)/python -m ruff check planner tests bench
	$(BIN)/python -m mypy

lint: $(TEST_STAMP)
	$(BIN)/python -m ruff check planner tests bench
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) $(FW) $(FW).log out .pytest_cache .mypy_cache .ruff_cache
