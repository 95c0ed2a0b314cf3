# Two commands for a fresh machine (each does its own set-up):
#   make run    the main job on its built-in default (small Syn-1 preset, CPU is fine)
#   make test   the style checks (ruff, pyink) and the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/syn1_small
CONFIG ?= configs/synthetic.py:syn1_small

# On a CPU-only machine one XLA host device per core (a power of two up to 8, so that the
# batch divides) nearly doubles training throughput; GPUs are used as they are.
CPU_DEVICES ?= $(shell n=$$(nproc 2>/dev/null || echo 1); d=1; \
  while [ $$((d * 2)) -le $$n ] && [ $$((d * 2)) -le 8 ]; do d=$$((d * 2)); done; echo $$d)
export XLA_FLAGS ?= --xla_force_host_platform_device_count=$(CPU_DEVICES)

LINTED := freqjax tests launch configs

.PHONY: run test lint setup clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) launch/pipeline.py --config=$(CONFIG) --workdir=$(WORKDIR)

# Style first (seconds), then the suite.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/pyink --check --diff $(LINTED)

test: lint
	$(PY) -m pytest -q -n 2 --dist=loadfile tests

clean:
	rm -rf $(VENV) runs
