# make reproduce: install into .venv and run every study; make test: install into .venv and run the tests.
# make reproduce DATA_DIR=/path/to/cifar10 uses a local copy (torchvision folder or ImageFolder tree).
PYTHON ?= python3
DATA_DIR ?= data
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install reproduce report test bench clean

install: $(VENV)/.installed

# constraints.txt pins the versions the tests last passed with, so that a fresh install is the tested one;
# the editable install lets the notebooks and examples import iwshift from any folder
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

reproduce: install
	$(PY) synthetic_study.py
	$(PY) CIFAR10_binary_classifier.py --settings weighting imbalance --data-dir $(DATA_DIR)
	$(PY) CIFAR10_extension.py --data-dir $(DATA_DIR)
	$(PY) -m iwshift.report --results results --docs docs

report: install
	$(PY) -m iwshift.report --results results --docs docs

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_synthetic.py
	$(PY) benchmarks/bench_cifar.py --data-dir $(DATA_DIR)

clean:
	rm -rf results figures
