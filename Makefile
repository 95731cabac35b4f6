# Quickstart: `make demo` and `make test` each create .venv if missing and install what they need.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint proto sync-crd clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[trainer,operator,report,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedkube run examples/digits-fedavg.yaml --report

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

proto: $(STAMP)
	$(BIN)/python -m fedkube.protocol.generate

clean:
	rm -rf $(VENV) runs build *.egg-info
