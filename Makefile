# Set-up and everyday commands; each creates or reuses the virtual environment in $(VENV).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
CONFIG ?= configs/default.py

.PHONY: install install-test demo test test-fast tensorboard clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(VENV)/bin/activate
	$(PY) -m pip install --quiet -e ".[tensorboard]"

install-test: $(VENV)/bin/activate
	$(PY) -m pip install --quiet -e ".[test]"

# Fetch the offline corpus, train the default config, evaluate its final checkpoint on the test split.
demo: install
	$(PY) -m tx_jax.train --config=$(CONFIG) --workdir=$(WORKDIR)
	$(PY) -m tx_jax.evaluate --config=$(CONFIG) --workdir=$(WORKDIR) --split=test
	@echo "TensorBoard logs: $(WORKDIR)/tensorboard  (make tensorboard WORKDIR=$(WORKDIR))"
	@echo "Checkpoints:      $(WORKDIR)/checkpoints"
	@echo "Translations:     $(WORKDIR)/eval/"

test: install-test
	$(PY) -m pytest -q

test-fast: install-test
	$(PY) -m pytest -q -m "not slow"

tensorboard: install
	$(VENV)/bin/tensorboard --logdir=$(WORKDIR)/tensorboard --bind_all

clean:
	rm -rf $(VENV) workdirs build *.egg-info
