# fastvid: `make demo` (synthetic data -> train TRN -> eval -> engine -> bench -> report) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out
GPU_OUT ?= gpu_check_out

.PHONY: demo test test-unit test-e2e venv install-demo install-test clean-demo gpu-check gpu-keep

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# Stamps are keyed to setup.py so that a changed dependency list re-installs.
$(VENV)/.demo-installed: setup.py | $(BIN)/python
	$(BIN)/pip install -e ".[dali,onnx,openvino,video]"
	touch $@

$(VENV)/.test-installed: setup.py | $(BIN)/python
	$(BIN)/pip install -e ".[test]"
	touch $@ $(VENV)/.demo-installed

install-demo: $(VENV)/.demo-installed
install-test: $(VENV)/.test-installed

demo: $(VENV)/.demo-installed
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh $(DEMO_OUT)

# Everything (CI: .ci/run); the unit layer alone is the contributor's quick loop, the e2e layer
# runs the CLI end to end (trained fixtures, engines, DDP).
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest tests

test-unit: $(VENV)/.test-installed
	$(BIN)/python -m pytest tests/unit

test-e2e: $(VENV)/.test-installed
	$(BIN)/python -m pytest tests/e2e

# The GPU check (7 min; GPU_CHECK_ARGS=--quick for ~4, --plan to see the schedule) into $(GPU_OUT); `make gpu-keep` then files it
# under reports/gpu/<date>-<device>/ and links it from the README.
gpu-check: $(VENV)/.demo-installed
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/gpu_check.sh $(GPU_OUT) $(GPU_CHECK_ARGS)

gpu-keep: $(VENV)/.demo-installed
	$(BIN)/python -m bench.gpu_check keep $(GPU_OUT)

clean-demo:
	rm -rf $(DEMO_OUT)
