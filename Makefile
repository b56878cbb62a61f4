# vasa-jax: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile tests

demo: setup
	$(PY) -m vasa_jax demo --out out

bench: setup
	$(PY) benchmarks/synth_render.py
	$(PY) benchmarks/input_pipeline.py

clean:
	rm -rf out .pytest_cache
