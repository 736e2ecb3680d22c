# The README's two commands are `make demo` (setup + run) and `make test`.
# Everything they need is installed by the targets below, cached where a rerun finds it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/hack

.PHONY: demo test lint generate typecheck unit integration deps venv tools cluster-up cluster-down cluster-status bench dist image clean

test: deps venv tools lint typecheck
	QR_REQUIRE_TOOLS=1 $(PY) -m pytest

unit: venv
	$(PY) -m pytest -m "not integration"

integration: deps venv tools
	$(PY) -m pytest -m integration

lint: venv
	$(PY) -m ruff check operator hack tests
	$(PY) -m ruff format --check operator hack tests
	$(PY) hack/gen-crd.py --check
	$(PY) hack/gen-docs.py --check
	$(PY) hack/vllm-contract.py --check

generate: venv
	$(PY) hack/gen-crd.py
	$(PY) hack/gen-docs.py

typecheck: venv
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

deps:
	@hack/install-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml hack/constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c hack/constraints.txt -e '.[dev]'
	@touch $@

tools:
	@hack/tools.sh kube >/dev/null
	@hack/tools.sh kwok >/dev/null
	@hack/tools.sh helm >/dev/null
	@hack/tools.sh ocitool >/dev/null
	@hack/tools.sh versitygw >/dev/null
	@hack/tools.sh argocd-lua >/dev/null
	@hack/tools.sh kstatus >/dev/null
	@hack/tools.sh promsd >/dev/null

# The sdist and wheel in dist/ (python -m build).
dist: venv
	$(PY) hack/dist.py dist

# The operator/router image as an OCI layout, without a container engine (needs root: debootstrap,
# chroot); prints where the layout is. Push it with any OCI tool, e.g. `crane push LAYOUT REF`.
image: deps venv
	$(PY) hack/dist.py image

demo: deps venv tools
	$(PY) hack/demo.py

cluster-up: deps venv tools
	@hack/cluster up

cluster-down: venv
	@hack/cluster down

cluster-status: venv
	@hack/cluster status

bench: deps venv tools
	$(PY) hack/bench/startup.py

clean:
	-@hack/cluster down
	rm -rf $(VENV) .stack .pytest_cache .mypy_cache .ruff_cache dist
