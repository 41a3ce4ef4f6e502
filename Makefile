# Daily tasks. `make install` once on a fresh machine, then any target below.
PY := .venv/bin/python
TORCH_WHEEL := $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl)

.PHONY: install train test test-fast bench clean

install:  ## create .venv and install sumlab with every extra (CPU torch pinned by constraints.txt)
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt $(or $(TORCH_WHEEL),torch==2.13.0)
	$(PY) -m pip install -q -c constraints.txt -e ".[all]"

train:  ## the offline default end to end: tiny T5 on synthetic dialogues (about 2 minutes on 2 cores)
	$(PY) train.py $(ARGS)

test:  ## the whole suite (what CI runs)
	$(PY) -m pytest -q $(ARGS)

test-fast:  ## skip the tests that train or spawn processes
	$(PY) -m pytest -q -m "not slow" $(ARGS)

clean:  ## remove run outputs and caches (not .venv)
	rm -rf outputs multirun .cache .pytest_cache
