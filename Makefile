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

# Then the tests that assert what a trained model learned (marker `trains`) again, under XLA's
# CPU code for another processor (tests/conftest.py): they must hold on any machine.
OTHER_ISA ?= $(shell uname -m | grep -Eq '^(x86_64|amd64)$$' && echo --xla_cpu_max_isa=SSE4_2)

test: lint
	$(PY) -m pytest -q -n 2 --dist=loadfile tests
	@if [ -n "$(OTHER_ISA)" ]; then \
	  echo "Second pass: the tests marked 'trains' with XLA_FLAGS+=$(OTHER_ISA)"; \
	  XLA_FLAGS="$(XLA_FLAGS) $(OTHER_ISA)" $(PY) -m pytest -q -n 2 --dist=loadfile -m trains tests; \
	else echo "Second pass skipped: no other XLA CPU instruction set is known for $$(uname -m)"; fi

clean:
	rm -rf $(VENV) runs
