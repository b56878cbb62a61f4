# vasa-jax: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: setup setup-dev test demo bench clean

setup: $(STAMP)

# Runtime environment: everything `vasa-jax` needs, from PyPI only.
$(STAMP): requirements.txt requirements-nodeps.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Test-only extras (torch CPU for grid-sample parity tests).
setup-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

test: setup-dev
	$(PY) -m pytest -q -n 2 --dist loadfile tests

demo: setup
	$(PY) -m vasa_jax demo --out out

bench: setup
	$(PY) benchmarks/synth_render.py
	$(PY) benchmarks/input_pipeline.py

clean:
	rm -rf out .pytest_cache
