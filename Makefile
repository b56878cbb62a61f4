# vasa-jax: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: setup setup-dev test demo bench clean dist-check

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
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n 2 --dist loadfile tests

demo: setup
	$(PY) -m vasa_jax demo --out out

bench: setup
	$(PY) benchmarks/synth_render.py
	$(PY) benchmarks/input_pipeline.py

# The wheel as a user gets it: built from this tree, installed into a fresh venv (no editable
# install, the repository not on the path), then `vasa-jax demo`, `vasa-jax verify` and the
# README's Python API run from an empty folder.
DIST := build/dist-check
dist-check: setup
	rm -rf $(DIST) && mkdir -p $(DIST)/run
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation . -w $(DIST)
	ls -l $(DIST)/*.whl && $(PY) -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('$(DIST)/*.whl')[0]); print(len(z.namelist()), 'files')"
	$(PYTHON) -m venv $(DIST)/venv
	$(DIST)/venv/bin/python -m pip install --quiet --upgrade pip
	$(DIST)/venv/bin/python -m pip install --quiet $(DIST)/*.whl
	cd $(DIST)/run && ../venv/bin/vasa-jax demo --out demo && ../venv/bin/vasa-jax verify demo/demo.mp4
	cd $(DIST)/run && ../venv/bin/python -c "import vasa_jax, os; \
	  ex = os.path.join(os.path.dirname(vasa_jax.__file__), 'assets', 'examples'); \
	  assert 'site-packages' in vasa_jax.__file__, vasa_jax.__file__; \
	  r = vasa_jax.Animator().animate(os.path.join(ex, 'portrait.jpg'), os.path.join(ex, 'speech.flac'), steps=10, seed=0); \
	  print(len(r), 'frames ->', r.save('api.mp4'))"

clean:
	rm -rf out .pytest_cache build
