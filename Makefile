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
	$(BIN)/pip install -q -e '.[trainer,operator,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedkube run examples/digits-fedavg.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

# Flower gets its own venv (its protobuf pin conflicts with ours) that sees .venv's packages
# (torch, numpy) through a .pth file placed behind its own site-packages.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: $(STAMP)
	$(PY) -m venv $(BENCH_VENV)
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
	  "$$($(BENCH_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/fedkube-venv.pth"
	$(BENCH_VENV)/bin/pip install -q -e '.[flower]'
	touch $@

bench: $(STAMP) $(BENCH_VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

proto: $(STAMP)
	$(BIN)/python -m fedkube.protocol.generate

clean:
	rm -rf $(VENV) runs build *.egg-info
