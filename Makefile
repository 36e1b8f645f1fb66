# make reproduce: install into .venv and run every study; make test: install into .venv and run the tests.
# make reproduce DATA_DIR=/path/to/cifar10 uses a local copy (torchvision folder or ImageFolder tree).
PYTHON ?= python3
DATA_DIR ?= data
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install reproduce cpu-results report quick test bench clean

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

# A first look (<= 15 min on 2 CPU cores): the 2-D study at paper scale and a one-seed slice of each CIFAR
# study (cpu preset, fewer weights, ratios and epochs), with their claims report in results/quick/REPORT.md.
QUICK := results/quick
CIFAR_QUICK := --preset cpu --seeds 0 --data-dir $(DATA_DIR)
quick: install
	$(PY) synthetic_study.py --out $(QUICK)/synthetic --figures figures/quick/synthetic
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_QUICK) --settings weighting imbalance --regimes none l2 dropout \
		--weights 1/8 1 8 --ratios 1/4 4 --epochs 60 --out $(QUICK)/cifar_binary --figures figures/quick/cifar_binary
	$(PY) CIFAR10_extension.py $(CIFAR_QUICK) --studies covariate --regimes none --out $(QUICK)/cifar_extension \
		--figures figures/quick/cifar_extension
	$(PY) -m iwshift.report --results $(QUICK)

# The results committed in paper-results/ behind every number of the README (2 CPU cores, cpu presets), in the
# order of the study (paper-results/README.md gives the commands as they were run, with wall times): the 2-D study
# at paper scale (plain runs 20 seeds, remedies and extreme weights 10); the covariate extension (16 seeds) and its
# rerun in other stacks;
# CIFAR-10 weighting and imbalance (cat/dog, and deer/automobile), the L2 and dropout strengths, the dropout regime
# and the remedies; then each CIFAR folder's merged table of all its runs, the claims report, the README's table
# and the figures. Each step resumes where it stopped.
CPU_RESULTS ?= paper-results
CIFAR_CPU := --preset cpu --data-dir $(DATA_DIR) --no-figures
SEEDS5 := --seeds 0 1 2 3 4
STRENGTH := $(CPU_RESULTS)/cifar_binary_strength
cpu-results: install
	$(PY) synthetic_study.py --out $(CPU_RESULTS)/synthetic --no-figures --seeds $$(seq 0 19) --no-extreme
	$(PY) synthetic_study.py --out $(CPU_RESULTS)/synthetic --no-figures --seeds $$(seq 0 9)
	$(PY) synthetic_study.py --out $(CPU_RESULTS)/synthetic --no-figures --seeds $$(seq 0 23) \
		--remedies poly logit_adjusted drw exponent --no-extreme
	$(PY) synthetic_study.py --out $(CPU_RESULTS)/synthetic --no-figures --seeds $$(seq 0 39) --remedies logit_adjusted \
		--no-extreme
	$(PY) CIFAR10_extension.py $(CIFAR_CPU) --seeds $$(seq 0 15) --studies covariate --regimes none \
		--out $(CPU_RESULTS)/cifar_extension
	$(PY) CIFAR10_extension.py $(CIFAR_CPU) --seeds $$(seq 0 15) --studies covariate --regimes none --max-stack 3 \
		--out $(CPU_RESULTS)/cifar_extension_rerun
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) $(SEEDS5) --settings weighting --regimes none l2 --weights 1/8 1/2 1 2 8 \
		--out $(CPU_RESULTS)/cifar_binary
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) $(SEEDS5) --settings imbalance --ratios 1/4 4 --out $(CPU_RESULTS)/cifar_binary
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) --seeds $$(seq 0 7) --settings imbalance --ratios 1/4 4 \
		--classes deer automobile \
		--out $(CPU_RESULTS)/cifar_binary_deer_automobile
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) $(SEEDS5) --settings weighting --regimes l2 --l2 1e-2 --weights 1/8 1 8 \
		--out $(STRENGTH)/l2_0.01
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) $(SEEDS5) --settings weighting --regimes dropout --dropout 0.1 \
		--weights 1/8 1 8 --out $(STRENGTH)/dropout_0.1
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) $(SEEDS5) --settings weighting --regimes l2 --l2 3e-2 --weights 1/8 1 8 \
		--out $(STRENGTH)/l2_0.03
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) $(SEEDS5) --settings weighting --regimes dropout --weights 1/8 1 8 \
		--out $(CPU_RESULTS)/cifar_binary
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) $(SEEDS5) --settings weighting --regimes l2 --l2 3e-3 --weights 1/8 1 8 \
		--out $(STRENGTH)/l2_0.003
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) --seeds 0 1 2 --settings weighting --regimes none --weights 1/8 1 8 \
		--remedies poly logit_adjusted drw exponent --out $(CPU_RESULTS)/cifar_binary
	$(PY) CIFAR10_binary_classifier.py $(CIFAR_CPU) --seeds $$(seq 0 10) --settings weighting --regimes none --weights 1/8 1 8 \
		--remedies exponent --out $(CPU_RESULTS)/cifar_binary
	$(PY) -m iwshift.results merge $(CPU_RESULTS)/cifar_binary $(CPU_RESULTS)/cifar_binary_deer_automobile \
		$(STRENGTH)/l2_0.003 $(STRENGTH)/l2_0.01 $(STRENGTH)/l2_0.03 $(STRENGTH)/dropout_0.1
	$(PY) -m iwshift.report --results $(CPU_RESULTS) --docs docs --readme README.md

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_synthetic.py
	$(PY) benchmarks/bench_cifar.py --data-dir $(DATA_DIR)

clean:
	rm -rf results figures
