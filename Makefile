# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv if it is absent and install the project into it.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.hepprune-installed
EXTRAS ?= cpu,test
DEMO   := runs/demo

.PHONY: install demo test bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) data/make_dataset.py --out $(DEMO)/data --events 200000 --shards 2 --seed 1
	$(VPY) ptq/trainModel.py --config configs/demo.yaml --run-dir $(DEMO) --overwrite
	$(VPY) prune/sensitivity_scan.py --config configs/demo.yaml --run-dir $(DEMO)
	$(VPY) prune/train_model_prune.py --config configs/demo.yaml --run-dir $(DEMO) --overwrite
	$(VPY) prune/analyze_prune.py --config configs/demo.yaml --run-dir $(DEMO)
	$(VPY) ptq/bitwidth_scan.py --config configs/demo.yaml --run-dir $(DEMO)
	$(VPY) ptq/summarize_run.py $(DEMO)

test: $(STAMP)
	$(VPY) -m pytest

bench: $(STAMP)
	$(VPY) bench/bench_loader.py
	$(VPY) bench/bench_prune.py
	@test -f $(DEMO)/prune_0.75/model.h5 || $(MAKE) demo
	$(VPY) bench/bench_csim.py

clean:
	rm -rf $(DEMO) .pytest_cache
