# Everything runs from a local virtualenv (.venv) that `make setup` creates.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=
# Where PyTorch comes from: pip's default index, unless set. On a machine without an NVIDIA GPU,
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# installs the CPU build (a few hundred MB instead of several GB of CUDA libraries), on platforms it has wheels for.
TORCH_INDEX ?=
# The newest PyTorch releases lrc is tested with; widen at your own risk: make setup TORCH="torch>=2.4" ...
TORCH       ?= "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"

.PHONY: setup demo study base study-full test test-fast bench bench-quick clean

$(BIN)/lrc: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first; then SAM2 (the tpo extra), a source distribution that builds against that torch (without its
	# optional CUDA extension); then lrc with the extras the tests use; then decord, which has wheels for x86-64
	# Linux and Windows only (elsewhere PyAV, a base dependency, reads the videos).
	$(BIN)/pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --no-build-isolation "sam2>=1.0"
	$(BIN)/pip install -e ".[dev,slurm,tpo,mlflow,eval]"
	# the eval extra's lmms-eval pins latex2sympy2, which pins antlr4 4.7; omegaconf needs 4.9 (docs/evaluation.md)
	$(BIN)/pip install "antlr4-python3-runtime==4.9.3"
	$(BIN)/pip install "decord>=0.6" || echo "decord has no wheel for this platform; PyAV reads the videos"
	touch $(BIN)/lrc

setup: $(BIN)/lrc

demo: setup
	$(BIN)/lrc fit experiments/demo/tiny.yaml

# The default study: four HiCo compressors at 16 tokens per frame -> results table and plots (docs/ablations.md)
study: setup
	$(BIN)/lrc ablate experiments/ablations/compressors.yaml --out runs/study-compressors

# The tiny pretrained base (docs/results.md, "The tiny base"): stages 1 and 2 on a 6,000-video corpus, exported to
# runs/base/model, which the studies on the base load (model.init.path). About 36 minutes on 2 CPU cores, once (corpus 3.5, stage 1 22, stage 2 10):
# a finished stage is not run again, and with runs/base/model present `make base` does nothing (delete it to rebuild).
BASE := runs/base/model

base: setup $(BASE)/manifest.json

$(BASE)/manifest.json:
	test -f runs/base/stage1/metrics.json || $(BIN)/lrc fit experiments/tiny_base/stage1.yaml --out runs/base/stage1 --resume-if-exists
	test -f runs/base/stage2/metrics.json || $(BIN)/lrc fit experiments/tiny_base/stage2.yaml --out runs/base/stage2 --resume-if-exists
	rm -rf $(BASE).partial
	$(BIN)/lrc export runs/base/stage2 --out $(BASE).partial --no-hf-llm
	mv $(BASE).partial $(BASE)

# The seeded studies on the base (3 seeds each, tables as mean ± std, plots with error bars; docs/results.md):
# HiCo x TPO, the TPO demo against its untrained heads, compressors, tokens per frame, two cells at a time: about
# 1 h 45 min on 2 CPU cores (docs/results.md); re-running resumes.
study-full: base
	$(BIN)/lrc ablate experiments/ablations/hico_x_tpo_on_base.yaml --out runs/study-full/hico-x-tpo --jobs 2
	$(BIN)/lrc ablate experiments/ablations/tpo_demo_on_base.yaml --out runs/study-full/tpo-demo --jobs 2
	$(BIN)/lrc ablate experiments/ablations/compressors_on_base.yaml --out runs/study-full/compressors --jobs 2
	$(BIN)/lrc ablate experiments/ablations/tokens_per_frame_on_base.yaml --out runs/study-full/tokens-per-frame --jobs 2

# lint-imports: the layer contracts of pyproject.toml (docs/design.md); a backwards import fails here
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Every benchmarks/*.py (not _*.py) follows one convention (benchmarks/README.md): Markdown on stdout, --json PATH,
# --quick; so a new script joins `make bench` by being there. Each writes bench/NAME.json and bench/NAME.md; a
# failing one is named at the end and the others still run. Full size takes the better part of an hour on 2 cores.
BENCH_DIR  ?= bench
BENCH_ARGS ?=
BENCHMARKS := $(sort $(filter-out benchmarks/_%,$(wildcard benchmarks/*.py)))

bench: setup
	@mkdir -p $(BENCH_DIR); failed=; \
	for script in $(BENCHMARKS); do \
		name=$$(basename $$script .py); echo "== $$name -> $(BENCH_DIR)/$$name.json, $(BENCH_DIR)/$$name.md"; \
		$(BIN)/python $$script $(BENCH_ARGS) --json $(BENCH_DIR)/$$name.json > $(BENCH_DIR)/$$name.md \
			|| failed="$$failed $$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

# the CI smoke: every benchmark at --quick size, into bench/quick/ (about 9 minutes on 2 busy cores)
bench-quick:
	$(MAKE) bench BENCH_ARGS=--quick BENCH_DIR=$(BENCH_DIR)/quick

clean:
	rm -rf $(VENV) build *.egg-info
