# Two commands for a fresh machine (each does its own set-up):
#   make run    the main job on its built-in default (small Syn-1 preset, CPU is fine)
#   make test   the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/syn1_small
CONFIG ?= configs/synthetic.py:syn1_small

.PHONY: run test setup bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) launch/pipeline.py --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist=loadfile tests

clean:
	rm -rf $(VENV) runs
