# Set-up and everyday commands; each creates or reuses the virtual environment in $(VENV).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
# test-core: the test extra without transformers and torch (the interop tests then skip themselves)
TEST_EXTRA ?= test
PYTEST_ARGS ?=
# pytest-xdist workers: most test time is single-threaded (Python, XLA compiles, subprocess start-up), so two
# workers use a 2-core machine's second core; worksteal keeps the long end-to-end tests from piling up on one.
TEST_WORKERS ?= auto
CONFIG ?= configs/default.py
# The tests run with the tuned malloc that tx_jax's entry points give themselves (tx_jax/host_memory.py),
# so that the steps they run in-process allocate as users' runs do (empty where that malloc is unavailable).
TUNED_MALLOC = GLIBC_TUNABLES="$$($(PY) -c 'from tx_jax import host_memory; \
  print(host_memory.environment_for_children().get("GLIBC_TUNABLES", ""))')"

.PHONY: install install-test demo test test-fast tensorboard clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(VENV)/bin/activate
	$(PY) -m pip install --quiet -e ".[tensorboard]"

# The interop tests build reference models with PyTorch: a CPU build is enough (torch==2.13.0 is the
# CPU wheel this project's machines carry; elsewhere a CPU torch installed beforehand is kept).
install-test: $(VENV)/bin/activate
	[ "$(TEST_EXTRA)" != test ] || $(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[$(TEST_EXTRA)]"

# Fetch the offline corpus, train the default config, evaluate its final checkpoint on the test split.
demo: install
	$(PY) -m tx_jax.train --config=$(CONFIG) --workdir=$(WORKDIR)
	$(PY) -m tx_jax.evaluate --config=$(CONFIG) --workdir=$(WORKDIR) --split=test
	@echo "TensorBoard logs: $(WORKDIR)/tensorboard  (make tensorboard WORKDIR=$(WORKDIR))"
	@echo "Checkpoints:      $(WORKDIR)/checkpoints"
	@echo "Translations:     $(WORKDIR)/eval/"

test: install-test
	$(TUNED_MALLOC) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: install-test
	$(TUNED_MALLOC) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

tensorboard: install
	$(VENV)/bin/tensorboard --logdir=$(WORKDIR)/tensorboard --bind_all

clean:
	rm -rf $(VENV) .venv-newest workdirs build *.egg-info
