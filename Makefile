# `make test` and `make demo` work on a fresh clone: they create .venv, install
# the project with its extras (torch/torchvision pinned in constraints.txt),
# then run. Nothing needs installing by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# e.g. https://download.pytorch.org/whl/cpu: the CPU build of the pinned torch
# (PyPI's x86_64 wheel is the CUDA build, several GB with its nvidia-* wheels)
TORCH_INDEX ?=

.PHONY: test demo install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[seg,test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/fuzzyseg demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
